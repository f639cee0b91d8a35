"""Checkpoint store: tensors-only checkpoints with checksums on top of an artifact store."""

from __future__ import annotations

import dataclasses
import io
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto._errors import CheckpointError
from optuna_mto._storage.schema import ARTIFACT_ID_PREFIX
from optuna_mto.checkpoints._format import deserialize_state, serialize_state, sha256_hex

if TYPE_CHECKING:
    import torch

    from optuna_mto._storage.optuna_internals import ArtifactStore

__all__ = ["CheckpointRef", "CheckpointStore"]

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_PREFIX_LEN = 64
_MAX_NAME_LEN = 128


def _safe(text: str, max_len: int) -> str:
    return _UNSAFE_CHARS.sub("_", text)[:max_len]


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """Reference to a stored checkpoint: where it is and how to verify it.

    Attributes:
        artifact_id: Identifier of the artifact in the artifact store.
        sha256: SHA-256 hex digest of the serialised checkpoint.
        nbytes: Size of the serialised checkpoint in bytes.
    """

    artifact_id: str
    sha256: str
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (e.g. for a trial's system attributes)."""
        return {"artifact_id": self.artifact_id, "sha256": self.sha256, "nbytes": self.nbytes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointRef:
        """Build a reference from the output of :meth:`to_dict`.

        Args:
            d: A mapping with the keys ``artifact_id``, ``sha256`` and ``nbytes``.

        Returns:
            The reference.

        Raises:
            ValueError: A key is missing or has a value of the wrong type.
        """
        for key in ("artifact_id", "sha256", "nbytes"):
            if key not in d:
                raise ValueError(f"checkpoint reference is missing the key {key!r}: {d!r}")
        artifact_id, sha256, nbytes = d["artifact_id"], d["sha256"], d["nbytes"]
        if not isinstance(artifact_id, str) or not isinstance(sha256, str):
            raise ValueError(f"checkpoint reference has non-string artifact_id/sha256: {d!r}")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"checkpoint reference has an invalid nbytes: {d!r}")
        return cls(artifact_id=artifact_id, sha256=sha256, nbytes=nbytes)


class CheckpointStore:
    """Saves and loads tensors-only checkpoints through an artifact store.

    Every checkpoint is written under a new, unique artifact id, and the returned
    :class:`CheckpointRef` carries its size and SHA-256 checksum, which :meth:`load` checks
    before deserialising with ``weights_only=True``.

    Args:
        artifact_store: Where the checkpoints are stored, e.g.
            :class:`~optuna_mto.checkpoints.AtomicFileSystemArtifactStore` or
            :class:`~optuna_mto.checkpoints.DatabaseArtifactStore`.
        prefix: First part of every artifact id. Characters outside ``[A-Za-z0-9._-]`` are
            replaced by ``"_"``.
    """

    def __init__(self, artifact_store: ArtifactStore, prefix: str = ARTIFACT_ID_PREFIX) -> None:
        self._artifact_store = artifact_store
        self._prefix = _safe(prefix, _MAX_PREFIX_LEN)

    @property
    def artifact_store(self) -> ArtifactStore:
        """The underlying artifact store."""
        return self._artifact_store

    def save(self, state: Mapping[str, Any], *, name: str) -> CheckpointRef:
        """Serialise and store a checkpoint under a new artifact id.

        Args:
            state: The checkpoint content (see
                :func:`~optuna_mto.checkpoints._format.serialize_state`).
            name: Human-readable part of the artifact id (e.g. ``"split3-epoch12"``).
                Characters outside ``[A-Za-z0-9._-]`` are replaced by ``"_"``.

        Returns:
            The reference needed to load the checkpoint.

        Raises:
            TypeError: ``state`` holds a value that is not a tensor or a plain Python value.
        """
        data = serialize_state(state)
        artifact_id = f"{self._prefix}-{_safe(name, _MAX_NAME_LEN)}-{uuid.uuid4().hex[:12]}"
        if artifact_id.startswith("."):
            artifact_id = "_" + artifact_id[1:]
        self._artifact_store.write(artifact_id, io.BytesIO(data))
        return CheckpointRef(artifact_id=artifact_id, sha256=sha256_hex(data), nbytes=len(data))

    def load(
        self, ref: CheckpointRef, map_location: str | torch.device | None = None
    ) -> dict[str, Any]:
        """Load a checkpoint after checking its size and checksum.

        Args:
            ref: The reference returned by :meth:`save`.
            map_location: Device to load the tensors on (as for :func:`torch.load`); ``None``
                keeps them on the CPU, where they were stored.

        Returns:
            The checkpoint content.

        Raises:
            CheckpointError: The checkpoint is missing, truncated, fails its checksum, or is
                not a tensors-only file.
        """
        artifact_id = ref.artifact_id
        try:
            with self._artifact_store.open_reader(artifact_id) as reader:
                data = reader.read()
        except ArtifactNotFound as e:
            raise CheckpointError(f"checkpoint {artifact_id} is missing") from e
        if len(data) != ref.nbytes:
            raise CheckpointError(
                f"checkpoint {artifact_id} is truncated or has the wrong size: read "
                f"{len(data)} bytes, expected {ref.nbytes}"
            )
        digest = sha256_hex(data)
        if digest != ref.sha256:
            raise CheckpointError(
                f"checkpoint {artifact_id} failed its checksum: checksum mismatch "
                f"(sha256 {digest}, expected {ref.sha256})"
            )
        try:
            return deserialize_state(data, map_location=map_location)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {artifact_id}: {e}") from e

    def remove(self, artifact_id: str) -> None:
        """Remove a checkpoint; a checkpoint that is already gone is ignored.

        Args:
            artifact_id: The artifact id of the checkpoint (``CheckpointRef.artifact_id``).
        """
        try:
            self._artifact_store.remove(artifact_id)
        except ArtifactNotFound:
            pass
