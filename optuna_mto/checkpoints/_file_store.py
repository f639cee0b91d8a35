"""An artifact store on a (possibly shared) file system, with atomic writes.

It implements Optuna's :class:`~optuna.artifacts._protocol.ArtifactStore` protocol
(``open_reader``, ``write``, ``remove``), so it also works with
:func:`optuna.artifacts.upload_artifact`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto._errors import CheckpointError

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["AtomicFileSystemArtifactStore"]

_COPY_BUFSIZE = 1024 * 1024
#: errno values that mean "no room to write": disk full, quota, file size limit.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class AtomicFileSystemArtifactStore:
    """An artifact store on a (possibly shared) file system with atomic writes.

    Each artifact is one file directly inside ``base_path``, named after its artifact id.
    :meth:`write` streams the content into a hidden temporary file in the same folder
    (``.<artifact_id>.<random>.tmp``), flushes and fsyncs it and then renames it onto the
    final name with :func:`os.replace`. A reader therefore sees either no artifact or the
    complete one, and a write that fails leaves nothing behind.

    Artifact ids must be plain file names: ids that are empty, contain a path separator or a
    NUL byte, or start with ``"."`` (which covers ``"."`` and ``".."`` and keeps the hidden
    names free for temporary files) are rejected with :class:`ValueError`.

    Args:
        base_path: Folder that holds the artifacts. Created (with parents) if missing.
    """

    def __init__(self, base_path: str | os.PathLike[str]) -> None:
        self._base_path = Path(base_path)
        self._base_path.mkdir(parents=True, exist_ok=True)

    @property
    def base_path(self) -> Path:
        """The folder that holds the artifacts."""
        return self._base_path

    def _get_filepath(self, artifact_id: str) -> Path:
        if not isinstance(artifact_id, str) or not artifact_id:
            raise ValueError(f"Invalid artifact_id: {artifact_id!r}")
        separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
        if (
            any(sep in artifact_id for sep in separators)
            or "\x00" in artifact_id
            or artifact_id.startswith(".")
        ):
            raise ValueError(
                f"Invalid artifact_id: {artifact_id!r}; artifact ids must be plain file names "
                "(no path separators, no leading '.')"
            )
        filepath = self._base_path / artifact_id
        base = os.path.abspath(self._base_path)
        if os.path.commonpath([base, os.path.abspath(filepath)]) != base:
            raise ValueError(f"Invalid artifact_id: {artifact_id!r}")
        return filepath

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """Open an artifact for reading.

        Args:
            artifact_id: The identifier of the artifact.

        Returns:
            A binary file object opened for reading; the caller closes it.

        Raises:
            ArtifactNotFound: No artifact with this id exists.
            ValueError: ``artifact_id`` is not a plain file name.
        """
        filepath = self._get_filepath(artifact_id)
        try:
            return open(filepath, "rb")
        except FileNotFoundError as e:
            raise ArtifactNotFound(
                f"artifact {artifact_id!r} was not found in {str(self._base_path)!r}"
            ) from e

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Write an artifact atomically, replacing any artifact with the same id.

        Args:
            artifact_id: The identifier of the artifact.
            content_body: Binary file object whose remaining content is the artifact.

        Raises:
            ValueError: ``artifact_id`` is not a plain file name.
        """
        filepath = self._get_filepath(artifact_id)
        fd, tmp_name = tempfile.mkstemp(
            dir=self._base_path, prefix=f".{artifact_id}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(content_body, f, _COPY_BUFSIZE)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, filepath)
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_name)
            if isinstance(err, OSError) and err.errno in _DISK_FULL:
                raise CheckpointError(
                    f"Could not write artifact {artifact_id!r} to {str(self._base_path)!r}: "
                    f"{err.strerror}. Nothing partial was kept. Free space there, or move "
                    "the checkpoints (OPTUNA_MTO_HOME, or create_study(artifact_store=...))."
                ) from err
            raise
        self._fsync_dir()

    def remove(self, artifact_id: str) -> None:
        """Remove an artifact.

        Args:
            artifact_id: The identifier of the artifact.

        Raises:
            ArtifactNotFound: No artifact with this id exists.
            ValueError: ``artifact_id`` is not a plain file name.
        """
        filepath = self._get_filepath(artifact_id)
        try:
            os.remove(filepath)
        except FileNotFoundError as e:
            raise ArtifactNotFound(
                f"artifact {artifact_id!r} was not found in {str(self._base_path)!r}"
            ) from e

    def _fsync_dir(self) -> None:
        # Make the rename durable. Best effort: not every platform / file system allows it.
        try:
            dir_fd = os.open(self._base_path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


if TYPE_CHECKING:
    # A static-typing assertion that the store implements Optuna's ArtifactStore protocol.
    from optuna_mto._storage.optuna_internals import ArtifactStore

    _: ArtifactStore = AtomicFileSystemArtifactStore("")
