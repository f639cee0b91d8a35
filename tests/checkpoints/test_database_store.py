from __future__ import annotations

import io
import threading

import optuna
import pytest
import sqlalchemy
from _artifact_helpers import SMALL_CHUNK, FailingReader, payload, read_artifact
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto.checkpoints import DatabaseArtifactStore

# --------------------------------------------------------------------------- database


def _rows(store, table: str, artifact_id: str) -> int:
    """Rows of ``table`` that belong to ``artifact_id``."""
    with store.engine.connect() as conn:
        return conn.execute(
            sqlalchemy.text(f"SELECT COUNT(*) FROM {table} WHERE artifact_id = :a"),
            {"a": artifact_id},
        ).scalar_one()


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 5 * SMALL_CHUNK + 500]
)
def test_db_store_round_trip_chunked(db_store, id_prefix, size) -> None:
    data = payload(size)
    db_store.write(f"{id_prefix}-a", io.BytesIO(data))
    assert read_artifact(db_store, f"{id_prefix}-a") == data
    with db_store.engine.connect() as conn:
        n_rows = conn.execute(
            sqlalchemy.text("SELECT COUNT(*) FROM mto_artifact_chunks WHERE artifact_id = :a"),
            {"a": f"{id_prefix}-a"},
        ).scalar_one()
        row = conn.execute(
            sqlalchemy.text("SELECT size, n_chunks FROM mto_artifacts WHERE artifact_id = :a"),
            {"a": f"{id_prefix}-a"},
        ).one()
    expected_chunks = -(-size // SMALL_CHUNK)
    assert n_rows == expected_chunks
    assert tuple(row) == (size, expected_chunks)


def test_db_store_overwrite_replaces(db_store, id_prefix) -> None:
    db_store.write(id_prefix, io.BytesIO(payload(4 * SMALL_CHUNK)))
    db_store.write(id_prefix, io.BytesIO(b"short"))
    assert read_artifact(db_store, id_prefix) == b"short"
    assert _rows(db_store, "mto_artifact_chunks", id_prefix) == 1


def test_db_store_failed_write_leaves_no_row(db_store, id_prefix) -> None:
    with pytest.raises(OSError, match="simulated failure"):
        db_store.write(id_prefix, io.BufferedReader(FailingReader(3 * SMALL_CHUNK + 10)))
    with pytest.raises(ArtifactNotFound):
        db_store.open_reader(id_prefix)
    for table in ("mto_artifacts", "mto_artifact_chunks"):
        assert _rows(db_store, table, id_prefix) == 0, table


def test_db_store_failed_overwrite_keeps_old_version(db_store, id_prefix) -> None:
    old = payload(2 * SMALL_CHUNK + 3)
    db_store.write(id_prefix, io.BytesIO(old))
    with pytest.raises(OSError):
        db_store.write(id_prefix, io.BufferedReader(FailingReader(3 * SMALL_CHUNK)))
    assert read_artifact(db_store, id_prefix) == old


def test_db_store_missing(db_store, id_prefix) -> None:
    with pytest.raises(ArtifactNotFound):
        db_store.open_reader(id_prefix)
    with pytest.raises(ArtifactNotFound):
        db_store.remove(id_prefix)
    db_store.write(id_prefix, io.BytesIO(payload(2500)))
    db_store.remove(id_prefix)
    with pytest.raises(ArtifactNotFound):
        db_store.open_reader(id_prefix)
    assert _rows(db_store, "mto_artifact_chunks", id_prefix) == 0


def test_db_store_incomplete_artifact_is_not_found(db_store, id_prefix) -> None:
    db_store.write(id_prefix, io.BytesIO(payload(3 * SMALL_CHUNK)))
    with db_store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("DELETE FROM mto_artifact_chunks WHERE artifact_id = :a AND seq = 1"),
            {"a": id_prefix},
        )
    with pytest.raises(ArtifactNotFound, match="incomplete"):
        db_store.open_reader(id_prefix)


def test_db_store_ids_are_independent(db_store, id_prefix) -> None:
    db_store.write(f"{id_prefix}-a", io.BytesIO(b"a" * 1500))
    db_store.write(f"{id_prefix}-b", io.BytesIO(b"b" * 2500))
    db_store.remove(f"{id_prefix}-a")
    assert read_artifact(db_store, f"{id_prefix}-b") == b"b" * 2500


def test_db_store_second_instance_and_engine(db_store, id_prefix) -> None:
    # Tables already exist: a second store on the same database (given an engine) reuses them.
    other = DatabaseArtifactStore(db_store.engine, chunk_size=SMALL_CHUNK)
    db_store.write(id_prefix, io.BytesIO(b"shared"))
    assert read_artifact(other, id_prefix) == b"shared"


def test_db_store_coexists_with_optuna_storage(db_store, id_prefix, tmp_path) -> None:
    url = db_store.engine.url.render_as_string(hide_password=False)
    storage = optuna.storages.RDBStorage(url)
    study_name = f"{id_prefix}-study"
    try:
        study = optuna.create_study(storage=storage, study_name=study_name)
        trial = study.ask()
        src = tmp_path / "src.bin"
        src.write_bytes(b"content")
        artifact_id = upload_artifact(
            artifact_store=db_store, file_path=str(src), study_or_trial=trial
        )
        assert read_artifact(db_store, artifact_id) == b"content"
        db_store.remove(artifact_id)
        study.tell(trial, 1.0)
        # A fresh store on a database that already holds both sets of tables.
        again = DatabaseArtifactStore(url, chunk_size=SMALL_CHUNK)
        again.write(f"{id_prefix}-x", io.BytesIO(b"again"))
        assert read_artifact(db_store, f"{id_prefix}-x") == b"again"
        again.engine.dispose()
        optuna.delete_study(study_name=study_name, storage=storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_db_store_rejects_bad_args(tmp_path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        DatabaseArtifactStore(f"sqlite:///{tmp_path / 'x.db'}", chunk_size=0)
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'y.db'}")
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.write("x" * 256, io.BytesIO(b""))


def test_db_store_sqlite_url(tmp_path) -> None:
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'x.db'}")
    assert store.url == f"sqlite:///{tmp_path / 'x.db'}"
    assert store.chunk_size == 4 * 1024 * 1024


@pytest.mark.postgres
def test_db_store_url_hides_password(pg_url) -> None:
    url = sqlalchemy.make_url(pg_url).set(password="s3cret-pw")
    try:
        store = DatabaseArtifactStore(url.render_as_string(hide_password=False))
    except sqlalchemy.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL server unreachable: {e}")
    try:
        assert "s3cret-pw" not in store.url
        assert "***" in store.url
    finally:
        store.engine.dispose()


# --------------------------------------------------------------------------- concurrency


def test_reader_never_sees_partial_artifact(artifact_store, id_prefix) -> None:
    """A reader racing an overwriting writer sees one complete version or the other."""
    versions = [bytes([v]) * (3 * SMALL_CHUNK + 17 * v) for v in (1, 2)]
    artifact_id = f"{id_prefix}-race"
    artifact_store.write(artifact_id, io.BytesIO(versions[0]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                i += 1
                artifact_store.write(artifact_id, io.BytesIO(versions[i % 2]))
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(60):
            data = read_artifact(artifact_store, artifact_id)
            assert data in versions
    finally:
        stop.set()
        thread.join()
    assert not errors
