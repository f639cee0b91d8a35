"""Opening a storage: a bad driver name or a missing driver is not a server that is down."""

from __future__ import annotations

import socket
import sys

import optuna
import pytest
from _models import digits_trainer
from conftest import postgres_url

from optuna_mto._storage.rdb import open_storage


def test_a_misspelt_driver_names_the_one_meant_not_the_server():
    with pytest.raises(ValueError) as info:
        open_storage("postgresql+psycog://postgres@127.0.0.1:5432/test")
    message = str(info.value)
    assert message == (
        "Unknown postgresql driver 'psycog' in storage postgresql+psycog://postgres@127.0.0.1:"
        "5432/test: did you mean postgresql+psycopg://...? SQLAlchemy's postgresql drivers: "
        'psycopg, psycopg2, pg8000, asyncpg, psycopg2cffi (pip install "optuna-mto[postgres]").'
    )
    assert "server" not in message


def test_a_misspelt_database_is_named_with_the_password_masked():
    with pytest.raises(ValueError, match=r"Unknown database 'postgress' in storage ") as info:
        open_storage("postgress://me:secret@127.0.0.1/db")
    assert "did you mean postgresql://...?" in str(info.value)
    assert "secret" not in str(info.value) and "server" not in str(info.value)
    with pytest.raises(ValueError, match="is not a database URL: write dialect\\+driver://"):
        open_storage("not a url://x")


def test_a_missing_driver_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as without the postgres extra
    with pytest.raises(ValueError) as info:
        open_storage("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert str(info.value) == (
        "The postgresql driver psycopg that storage postgresql+psycopg://postgres@127.0.0.1:"
        '5432/test asks for is not installed: pip install "optuna-mto[postgres]".'
    )


def test_an_unreachable_server_still_gets_the_server_hint():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match="Check that the database server is running"):
        open_storage(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")


@pytest.mark.postgres
def test_worker_processes_hold_a_bounded_number_of_server_connections(digits, study_name):
    """Each process keeps POOL_SIZE connections and opens at most 5 at once."""
    import threading
    import uuid

    import sqlalchemy as sa

    import optuna_mto
    from optuna_mto._storage.rdb import MAX_OVERFLOW, POOL_SIZE, get_engine

    app = f"mto-{uuid.uuid4().hex[:8]}"
    url = sa.make_url(postgres_url()).update_query_dict({"application_name": app})
    url = url.render_as_string(hide_password=False)
    study = optuna_mto.create_study(study_name=study_name, storage=url, n_splits=3, seed=0)
    pool = get_engine(study.study._storage).pool
    assert (pool.size(), pool._max_overflow) == (POOL_SIZE, MAX_OVERFLOW)

    admin = sa.create_engine(postgres_url(), poolclass=sa.pool.NullPool)
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")
    counts, done = [], threading.Event()

    def sample() -> None:
        with admin.connect() as conn:
            while not done.wait(0.05):
                counts.append(int(conn.execute(query, {"a": app}).scalar()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        study.optimize(digits_trainer(*digits, epochs=3), n_jobs=3, executor="process")
    finally:
        done.set()
        sampler.join()
        admin.dispose()
    assert study.summary().complete
    processes = 3 + 1  # the workers and this process
    assert 0 < max(counts) <= processes * (POOL_SIZE + MAX_OVERFLOW)


def test_a_grpc_storage_proxy_is_refused_with_the_reason_and_the_way_out(tmp_path):
    """Optuna's gRPC proxy carries Optuna's storage API only, not optuna-mto's tables."""
    pytest.importorskip("grpc")
    import threading

    from optuna.storages import GrpcStorageProxy, RDBStorage, run_grpc_proxy_server

    import optuna_mto

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = RDBStorage(f"sqlite:///{tmp_path / 'proxied.db'}")
    server = threading.Thread(
        target=run_grpc_proxy_server, args=(backend,), kwargs={"port": port}, daemon=True
    )
    server.start()
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        proxy = GrpcStorageProxy(host="localhost", port=port)
    with pytest.raises(ValueError, match="cannot run through a GrpcStorageProxy.*PgBouncer"):
        optuna_mto.create_study(study_name="proxied", storage=proxy, n_splits=2)
