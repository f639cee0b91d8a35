from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from optuna_mto.checkpoints import AtomicFileSystemArtifactStore, DatabaseArtifactStore

POSTGRES_ENV = "OPTUNA_MTO_TEST_POSTGRES_URL"
SMALL_CHUNK = 1000


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV} to run PostgreSQL tests")
    return url


def make_db_store(kind: str, tmp_path, chunk_size: int = SMALL_CHUNK) -> DatabaseArtifactStore:
    if kind == "sqlite":
        return DatabaseArtifactStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", chunk_size=chunk_size)
    url = postgres_url()
    try:
        return DatabaseArtifactStore(url, chunk_size=chunk_size)
    except sqlalchemy.exc.OperationalError as e:
        # The server was asked for explicitly: being unable to reach it is a failure, not a skip.
        pytest.fail(f"{POSTGRES_ENV} is set but the PostgreSQL server is unreachable: {e}")


def _cleanup_db(store: DatabaseArtifactStore, prefix: str) -> None:
    with store.engine.begin() as conn:
        for table in ("mto_artifact_chunks", "mto_artifacts"):
            conn.execute(
                sqlalchemy.text(f"DELETE FROM {table} WHERE artifact_id LIKE :p"),
                {"p": f"{prefix}%"},
            )
    store.engine.dispose()


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL URL from the environment (skips the test when unset)."""
    return postgres_url()


@pytest.fixture
def id_prefix() -> str:
    """Unique artifact id prefix, so parallel or earlier runs never collide."""
    return f"t{uuid.uuid4().hex[:12]}"


DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DB_KINDS)
def db_store(request, tmp_path, id_prefix) -> Iterator[DatabaseArtifactStore]:
    """A database artifact store with a small chunk size (SQLite file, or PostgreSQL)."""
    store = make_db_store(request.param, tmp_path)
    yield store
    _cleanup_db(store, id_prefix)


@pytest.fixture(params=["file", *DB_KINDS])
def artifact_store(request, tmp_path, id_prefix):
    """Each artifact store kind: file system, SQLite database, PostgreSQL database."""
    if request.param == "file":
        yield AtomicFileSystemArtifactStore(tmp_path / "artifacts")
        return
    store = make_db_store(request.param, tmp_path)
    yield store
    _cleanup_db(store, id_prefix)
