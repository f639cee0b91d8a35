"""Opening a storage: a bad driver name or a missing driver is not a server that is down."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest
from _models import digits_trainer
from conftest import postgres_url

import optuna_mto
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


_OPEN_AT_ONCE = """
import pathlib, sys, time
import optuna_mto
go = pathlib.Path(sys.argv[2])
(go.parent / f"ready-{sys.argv[3]}").touch()
while not go.exists():  # every process imported: start together
    time.sleep(0.01)
study = optuna_mto.create_study(study_name="race", storage=sys.argv[1], n_splits=2,
                                load_if_exists=True)
print("opened", study.n_splits)
"""


@contextlib.contextmanager
def _fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the test server (dropped after)."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    name = f"mto_race_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(postgres_url()).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_processes_creating_one_study_on_a_fresh_database_at_once_all_open_it(tmp_path, backend):
    """The ranks of a torchrun script (or workers started together) create the tables at once."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'fresh.db'}"
        else:
            url = stack.enter_context(_fresh_postgres_database())
        go = tmp_path / "go"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT_ONCE, url, str(go), str(i)],
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            for i in range(4)
        ]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < 4:  # every process imported torch
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, "\n---\n".join(outputs)[-4000:]
        assert all("opened 2" in out for out in outputs)
        study = optuna_mto.load_study(study_name="race", storage=url)
        assert study.n_splits == 2 and len(optuna.get_all_study_names(url)) == 1
