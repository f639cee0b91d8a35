"""Artifact stores with atomic writes, used to exchange checkpoints between workers.

Both stores implement Optuna's :class:`~optuna.artifacts._protocol.ArtifactStore` protocol
(``open_reader``, ``write``, ``remove``), so they can also be used with
:func:`optuna.artifacts.upload_artifact`.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy
from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto._errors import CheckpointError

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["AtomicFileSystemArtifactStore", "DatabaseArtifactStore"]

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


_metadata = sqlalchemy.MetaData()

_artifacts_table = sqlalchemy.Table(
    "mto_artifacts",
    _metadata,
    sqlalchemy.Column("artifact_id", sqlalchemy.String(255), primary_key=True),
    sqlalchemy.Column("size", sqlalchemy.BigInteger, nullable=False),
    sqlalchemy.Column("n_chunks", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("created_at", sqlalchemy.DateTime, nullable=False),
)

_chunks_table = sqlalchemy.Table(
    "mto_artifact_chunks",
    _metadata,
    sqlalchemy.Column("artifact_id", sqlalchemy.String(255), primary_key=True),
    sqlalchemy.Column("seq", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("data", sqlalchemy.LargeBinary, nullable=False),
)


class DatabaseArtifactStore:
    """An artifact store inside a SQL database (SQLite file or PostgreSQL).

    Workers on many machines only need the database URL (typically the same database as the
    Optuna storage) to exchange artifacts. The store keeps its own tables, ``mto_artifacts``
    (one row per complete artifact) and ``mto_artifact_chunks`` (the content, split into
    chunks of ``chunk_size`` bytes), next to Optuna's tables; they are created on first use.

    :meth:`write` inserts all chunks and then the ``mto_artifacts`` row in one transaction,
    and :meth:`open_reader` reads the row and its chunks in one statement and checks that
    they are complete, so a reader never sees a partial artifact.

    Args:
        url_or_engine: An SQLAlchemy URL or an existing :class:`sqlalchemy.Engine`. An engine
            created from a SQLite URL gets a 60 s busy timeout.
        chunk_size: Maximum size in bytes of one stored chunk.
    """

    def __init__(
        self,
        url_or_engine: str | sqlalchemy.Engine,
        chunk_size: int = 4 * 1024 * 1024,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self._chunk_size = chunk_size
        if isinstance(url_or_engine, sqlalchemy.Engine):
            self._engine = url_or_engine
        else:
            url = sqlalchemy.make_url(url_or_engine)
            connect_args = {"timeout": 60} if url.get_backend_name() == "sqlite" else {}
            self._engine = sqlalchemy.create_engine(
                url, connect_args=connect_args, pool_pre_ping=True
            )
        self._create_tables()

    def _create_tables(self) -> None:
        try:
            _metadata.create_all(self._engine, checkfirst=True)
        except sqlalchemy.exc.DBAPIError:
            # Another process may have created the tables between the check and the CREATE.
            inspector = sqlalchemy.inspect(self._engine)
            if not all(inspector.has_table(t.name) for t in _metadata.sorted_tables):
                raise

    @property
    def engine(self) -> sqlalchemy.Engine:
        """The SQLAlchemy engine used by the store."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with the password hidden, for messages."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def chunk_size(self) -> int:
        """Maximum size in bytes of one stored chunk."""
        return self._chunk_size

    def _not_found(self, artifact_id: str, detail: str = "was not found") -> ArtifactNotFound:
        return ArtifactNotFound(f"artifact {artifact_id!r} {detail} in {self.url}")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """Read a whole artifact.

        Args:
            artifact_id: The identifier of the artifact.

        Returns:
            An in-memory binary file object holding the artifact's content.

        Raises:
            ArtifactNotFound: No complete artifact with this id exists.
        """
        a, c = _artifacts_table, _chunks_table
        # One statement, so the artifact row and its chunks come from one snapshot even if
        # another process replaces the artifact concurrently.
        stmt = (
            sqlalchemy.select(a.c.size, a.c.n_chunks, c.c.seq, c.c.data)
            .select_from(
                a.outerjoin(c, c.c.artifact_id == a.c.artifact_id),
            )
            .where(a.c.artifact_id == artifact_id)
            .order_by(c.c.seq)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            raise self._not_found(artifact_id)
        size, n_chunks = rows[0].size, rows[0].n_chunks
        chunks = [r for r in rows if r.seq is not None]
        if len(chunks) != n_chunks or [r.seq for r in chunks] != list(range(n_chunks)):
            raise self._not_found(
                artifact_id, f"is incomplete ({len(chunks)} of {n_chunks} chunks)"
            )
        buf = io.BytesIO()
        for r in chunks:
            buf.write(r.data)
        if buf.tell() != size:
            raise self._not_found(artifact_id, f"is incomplete ({buf.tell()} of {size} bytes)")
        buf.seek(0)
        return buf

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Write an artifact in one transaction, replacing any artifact with the same id.

        Args:
            artifact_id: The identifier of the artifact (at most 255 characters).
            content_body: Binary file object whose remaining content is the artifact.

        Raises:
            ValueError: ``artifact_id`` is empty or longer than 255 characters.
        """
        if not isinstance(artifact_id, str) or not 0 < len(artifact_id) <= 255:
            raise ValueError(f"Invalid artifact_id: {artifact_id!r} (1 to 255 characters)")
        a, c = _artifacts_table, _chunks_table
        with self._engine.begin() as conn:
            conn.execute(sqlalchemy.delete(a).where(a.c.artifact_id == artifact_id))
            conn.execute(sqlalchemy.delete(c).where(c.c.artifact_id == artifact_id))
            size = 0
            seq = 0
            while True:
                data = content_body.read(self._chunk_size)
                if not data:
                    break
                conn.execute(
                    sqlalchemy.insert(c).values(artifact_id=artifact_id, seq=seq, data=bytes(data))
                )
                size += len(data)
                seq += 1
            conn.execute(
                sqlalchemy.insert(a).values(
                    artifact_id=artifact_id,
                    size=size,
                    n_chunks=seq,
                    created_at=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
                )
            )

    def remove(self, artifact_id: str) -> None:
        """Remove an artifact and its chunks in one transaction.

        Args:
            artifact_id: The identifier of the artifact.

        Raises:
            ArtifactNotFound: No artifact with this id exists.
        """
        a, c = _artifacts_table, _chunks_table
        with self._engine.begin() as conn:
            deleted = conn.execute(sqlalchemy.delete(a).where(a.c.artifact_id == artifact_id))
            conn.execute(sqlalchemy.delete(c).where(c.c.artifact_id == artifact_id))
            if deleted.rowcount == 0:
                raise self._not_found(artifact_id)


if TYPE_CHECKING:
    # A static-typing assertion that both stores implement Optuna's ArtifactStore protocol.
    from optuna.artifacts._protocol import ArtifactStore

    _: ArtifactStore = AtomicFileSystemArtifactStore("")
    __: ArtifactStore = DatabaseArtifactStore("")
