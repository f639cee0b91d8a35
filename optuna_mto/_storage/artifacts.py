"""Optuna artifact metadata for checkpoints, so optuna-dashboard lists and serves them.

``optuna.artifacts.upload_artifact`` copies a file into the artifact store under a
UUID and records an ``artifacts:<id>`` system attribute (an ``ArtifactMeta`` as JSON)
on the study or trial. A split's best checkpoint is already in the study's artifact
store; when the split finishes, :func:`promote_checkpoint` gives it a UUID id (the form
optuna-dashboard's download route accepts; a hard link or one SQL statement in
optuna-mto's stores, a copy in others) and records the same metadata, so the kept best
checkpoint *is* the Optuna artifact. The old id stays until the split has published the
new one: a published record never names a checkpoint that is gone.
``optuna.artifacts.get_all_artifact_meta`` and the dashboard's artifact panel list it,
and ``optuna.artifacts.download_artifact`` (or the dashboard) fetches it. The file is a
tensors-only checkpoint: ``torch.load(path, weights_only=True)["model"]`` is the
``state_dict``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
from typing import Any

import optuna
import sqlalchemy as sa

from optuna_mto._storage.optuna_internals import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import artifacts_table, chunks_table
from optuna_mto.checkpoints import (
    AtomicFileSystemArtifactStore,
    CheckpointRef,
    CheckpointStore,
    DatabaseArtifactStore,
)

__all__ = ["CHECKPOINT_MIMETYPE", "promote_checkpoint", "register_checkpoint"]

CHECKPOINT_MIMETYPE = "application/octet-stream"


def register_checkpoint(
    storage: optuna.storages.BaseStorage, trial_id: int, ref: CheckpointRef, filename: str
) -> str:
    """Record ``ref`` as an Optuna artifact of the trial; return its artifact id.

    Args:
        storage: The study's storage.
        trial_id: The trial (not its number).
        ref: A checkpoint in the study's artifact store.
        filename: The name the dashboard shows and downloads it as.
    """
    meta = ArtifactMeta(
        artifact_id=ref.artifact_id, filename=filename, mimetype=CHECKPOINT_MIMETYPE,
        encoding=None,
    )  # fmt: skip
    key = ARTIFACTS_ATTR_PREFIX + ref.artifact_id
    retry_transient(
        storage.set_trial_system_attr, trial_id, key, json.dumps(dataclasses.asdict(meta))
    )
    return ref.artifact_id


def promote_checkpoint(
    store: CheckpointStore,
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    ref: CheckpointRef,
    filename: str,
) -> CheckpointRef:
    """Give a checkpoint a UUID artifact id and register it; return the new reference.

    The bytes (and so the checksum) are unchanged. The old id stays loadable: the split's
    published record may name it, so the caller removes it only after publishing the new
    reference (other splits may have read the old record, see ``SplitHandle.load_donor``).
    """
    artifact_store = store.artifact_store
    new = CheckpointRef(artifact_id=str(uuid.uuid4()), sha256=ref.sha256, nbytes=ref.nbytes)
    if not _duplicate(artifact_store, ref.artifact_id, new.artifact_id):
        _copy(artifact_store, ref.artifact_id, new.artifact_id)
    register_checkpoint(storage, trial_id, new, filename)
    return new


def _duplicate(artifact_store: Any, old: str, new: str) -> bool:
    """Give ``old``'s bytes the id ``new`` too, in optuna-mto's own stores (O(1) or in SQL).

    A hard link, or one transaction that copies the rows inside the database. False for
    any other store (and a file system without hard links): the caller copies the bytes.
    """
    if isinstance(artifact_store, AtomicFileSystemArtifactStore):
        try:
            os.link(artifact_store._get_filepath(old), artifact_store._get_filepath(new))
        except FileNotFoundError:
            raise
        except OSError:  # no hard links here (some network or FUSE file systems)
            return False
        return True
    if isinstance(artifact_store, DatabaseArtifactStore):
        a, c = artifacts_table, chunks_table
        new_id = sa.literal(new, sa.String(255))

        def copy() -> None:
            with artifact_store.engine.begin() as conn:
                conn.execute(sa.insert(c).from_select(
                    ["artifact_id", "seq", "data"],
                    sa.select(new_id, c.c.seq, c.c.data).where(c.c.artifact_id == old),
                ))  # fmt: skip
                conn.execute(sa.insert(a).from_select(
                    ["artifact_id", "size", "n_chunks", "created_at"],
                    sa.select(new_id, a.c.size, a.c.n_chunks, a.c.created_at).where(
                        a.c.artifact_id == old
                    ),
                ))  # fmt: skip

        retry_transient(copy)  # one transaction: a failed try leaves nothing
        return True
    return False


def _copy(artifact_store: Any, old: str, new: str) -> None:
    def read() -> bytes:
        with artifact_store.open_reader(old) as reader:
            return reader.read()

    data = retry_transient(read)
    # A fresh stream on every try: a failed try may have consumed part of the last one.
    retry_transient(lambda: artifact_store.write(new, io.BytesIO(data)))
