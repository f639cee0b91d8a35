"""An artifact store inside the study's SQL database (SQLite file or PostgreSQL).

It implements Optuna's :class:`~optuna.artifacts._protocol.ArtifactStore` protocol
(``open_reader``, ``write``, ``remove``), so it also works with
:func:`optuna.artifacts.upload_artifact`.
"""

from __future__ import annotations

import datetime
import io
from typing import TYPE_CHECKING

import sqlalchemy
from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto._storage.schema import artifacts_table, chunks_table, ensure_tables
from optuna_mto._validation import check_int

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["DatabaseArtifactStore"]

_MAX_ID_LEN = 255


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
        check_int("chunk_size", chunk_size, 1)
        self._chunk_size = chunk_size
        if isinstance(url_or_engine, sqlalchemy.Engine):
            self._engine = url_or_engine
        else:
            url = sqlalchemy.make_url(url_or_engine)
            connect_args = {"timeout": 60} if url.get_backend_name() == "sqlite" else {}
            self._engine = sqlalchemy.create_engine(
                url, connect_args=connect_args, pool_pre_ping=True
            )
        ensure_tables(self._engine, artifacts_table, chunks_table)

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
        a, c = artifacts_table, chunks_table
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
        if not isinstance(artifact_id, str) or not 0 < len(artifact_id) <= _MAX_ID_LEN:
            raise ValueError(
                f"Invalid artifact_id: {artifact_id!r} (1 to {_MAX_ID_LEN} characters)"
            )
        a, c = artifacts_table, chunks_table
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
        a, c = artifacts_table, chunks_table
        with self._engine.begin() as conn:
            deleted = conn.execute(sqlalchemy.delete(a).where(a.c.artifact_id == artifact_id))
            conn.execute(sqlalchemy.delete(c).where(c.c.artifact_id == artifact_id))
            if deleted.rowcount == 0:
                raise self._not_found(artifact_id)


if TYPE_CHECKING:
    # A static-typing assertion that the store implements Optuna's ArtifactStore protocol.
    from optuna_mto._storage.optuna_internals import ArtifactStore

    _: ArtifactStore = DatabaseArtifactStore("")
