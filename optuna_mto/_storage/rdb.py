"""Opening Optuna storages for many concurrent writers, and the embedded default home."""

from __future__ import annotations

import difflib
import os
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

__all__ = [
    "DEFAULT_STORAGE_NAME",
    "check_url",
    "default_home",
    "default_storage_url",
    "get_engine",
    "mask_url",
    "open_storage",
    "sqlite_path",
    "storage_url",
]

_SQLITE_TIMEOUT_S = 60
#: Tries to open a fresh database that other processes are creating tables in at once.
_SCHEMA_RACE_TRIES = 5
#: A worker process's connections to a database server: it keeps ``POOL_SIZE`` open
#: between uses, and opens at most ``POOL_SIZE + MAX_OVERFLOW`` at once (the split's
#: thread and Optuna's heartbeat thread rarely need one at the same moment; an extra
#: one is closed after use). Optuna's tables, the claims, the board and the database
#: artifact store share them (one engine).
POOL_SIZE, MAX_OVERFLOW = 1, 4
#: SQLAlchemy's drivers of the usual databases (to name the one a misspelt URL meant).
_DRIVERS = {
    "postgresql": ("psycopg", "psycopg2", "pg8000", "asyncpg", "psycopg2cffi"),
    "sqlite": ("pysqlite", "aiosqlite", "pysqlcipher"),
    "mysql": ("pymysql", "mysqldb", "mysqlconnector", "asyncmy", "aiomysql"),
    "mariadb": ("pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"),
}
_POSTGRES_HINT = 'postgresql+psycopg://user@host/db, with pip install "optuna-mto[postgres]"'
#: How to install a driver module that is missing (default: ``pip install <module>``).
_INSTALL = {
    "psycopg": 'pip install "optuna-mto[postgres]"',
    "psycopg2": f"pip install psycopg2-binary, or use {_POSTGRES_HINT}",
    "MySQLdb": "pip install mysqlclient, or use mysql+pymysql://... with pip install pymysql",
}


def default_home() -> Path:
    """Return the embedded default home of SQLite files and checkpoints.

    ``$OPTUNA_MTO_HOME`` when set, else ``./storage`` under the current directory.
    """
    return Path(os.environ.get("OPTUNA_MTO_HOME", "storage")).resolve()


DEFAULT_STORAGE_NAME = "optuna_mto.db"


def default_storage_url(create: bool = True) -> str:
    """Return the SQLite URL of the embedded default database under :func:`default_home`.

    Args:
        create: Create the home folder if missing (False: only name the URL).
    """
    home = default_home()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / DEFAULT_STORAGE_NAME}"


def sqlite_path(url: str) -> Path | None:
    """Return the file of a SQLite URL (absolute), or None for other URLs and ``:memory:``."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for error messages)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is masked wholesale.
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def check_url(storage: str) -> None:
    """Check a database URL's dialect and driver without connecting to anything.

    Raises:
        ValueError: For a URL SQLAlchemy cannot read, an unknown database or driver
            (naming the likely intended one) or a driver that is not installed (naming
            what to install): none of these is fixed by starting a database server.
    """
    masked = mask_url(storage)
    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(
            f"storage={masked!r} is not a database URL: write dialect+driver://user@host:port"
            f"/database, e.g. {_POSTGRES_HINT}, or sqlite:///storage/study.db."
        ) from None
    backend, _, driver = url.drivername.partition("+")
    try:
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        if not driver or not _known_database(backend):
            close = difflib.get_close_matches(backend, list(_DRIVERS), n=1)
            guess = f": did you mean {close[0]}://...?" if close else "."
            raise ValueError(
                f"Unknown database {backend!r} in storage {masked}{guess} For PostgreSQL use "
                f"{_POSTGRES_HINT}; for a local file, sqlite:///storage/study.db."
            ) from None
        known = _DRIVERS.get(backend, ())
        close = difflib.get_close_matches(driver, known, n=1)
        guess = f"did you mean {backend}+{close[0]}://...? " if close else ""
        drivers = ", ".join(known) or "in its dialect documentation"
        extra = ' (pip install "optuna-mto[postgres]")' if backend == "postgresql" else ""
        raise ValueError(
            f"Unknown {backend} driver {driver!r} in storage {masked}: {guess}SQLAlchemy's "
            f"{backend} drivers: {drivers}{extra}."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = (err.name or dialect.driver).partition(".")[0]
        install = _INSTALL.get(module, f"pip install {module}")
        raise ValueError(
            f"The {backend} driver {module} that storage {masked} asks for is not installed: "
            f"{install}."
        ) from None


def _known_database(backend: str) -> bool:
    """True if SQLAlchemy has a dialect named ``backend`` (e.g. ``"postgresql"``)."""
    try:
        sqlalchemy.engine.make_url(f"{backend}://").get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError):
        return False
    return True


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def open_storage(
    storage: str | optuna.storages.BaseStorage,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    checked: bool = True,
    create: bool = True,
) -> optuna.storages.BaseStorage:
    """Open an Optuna RDB storage tuned for concurrent workers.

    SQLite files get write-ahead logging and a 60 s busy timeout, so that K worker
    processes writing to one file wait for each other instead of failing with
    "database is locked". A database server's connections come from one pool of
    :data:`POOL_SIZE` kept and :data:`MAX_OVERFLOW` extra connections per process
    (SQLAlchemy's default would keep up to 5 and open up to 15), so N worker processes
    hold about N of the server's connections; pass an ``RDBStorage`` built with your
    own ``engine_kwargs`` to size it otherwise. Heartbeats (``heartbeat_interval``
    seconds) let a killed worker's trial be detected as stale and retried.

    Args:
        storage: A database URL or an already-built ``RDBStorage``.
        heartbeat_interval: Seconds between heartbeats; ``None`` disables them.
        grace_period: Seconds without heartbeat after which a trial is stale
            (Optuna's default is twice the interval).
        checked: False skips Optuna's table creation and schema version check (about
            half a second): for a worker process whose parent opened the storage.
        create: False refuses a SQLite file that does not exist instead of creating it
            (for opening an existing study, and for read-only commands).

    Returns:
        The storage, wrapped like ``optuna.storages.get_storage`` does.

    Raises:
        ValueError: For a storage that is not a database (optuna-mto shares weights
            and claims splits through SQL tables), a misspelt or uninstalled driver (see
            :func:`check_url`), a URL that cannot be opened, or (with ``create=False``)
            a SQLite file that does not exist.
    """
    if isinstance(storage, optuna.storages.BaseStorage):
        return _built_storage(storage)
    if not isinstance(storage, str) or "://" not in storage:
        raise ValueError(
            f"storage must be a database URL or an RDBStorage, but got storage={storage!r}. "
            "Example: 'sqlite:///storage/study.db' or 'postgresql+psycopg://user@host/db'."
        )
    check_url(storage)  # a misspelt or missing driver is not a server that is down
    is_sqlite = storage.startswith("sqlite")
    if is_sqlite:
        engine_kwargs = _sqlite_kwargs(storage, create)
    else:  # one small pool per process (see POOL_SIZE)
        engine_kwargs = dict(pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    rdb = _rdb_storage(storage, engine_kwargs, heartbeat_interval, grace_period, checked)
    if is_sqlite:
        sqlalchemy.event.listen(rdb.engine, "connect", _enable_sqlite_wal)
        with rdb.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
        rdb.engine.dispose()  # connections opened before the listener lack the pragmas
    return optuna.storages.get_storage(rdb)


def _built_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Check that a storage built by the caller is a database; return it wrapped."""
    backend = getattr(storage, "_backend", storage)
    if type(backend).__name__ == "GrpcStorageProxy":
        raise ValueError(
            "optuna-mto cannot run through a GrpcStorageProxy: its split claims (an atomic "
            "insert-if-absent), weight board and checkpoints are SQL tables beside "
            "Optuna's in the same database, which the proxy does not carry. Give every "
            "worker the database URL itself (each worker process holds about one "
            "connection); for more workers than max_connections allows, put a "
            "connection pooler such as PgBouncer in front of PostgreSQL."
        )
    if not isinstance(backend, RDBStorage):
        raise ValueError(
            "optuna-mto needs a database storage (RDBStorage), but got "
            f"{type(storage).__name__}. Pass a URL such as 'sqlite:///storage/study.db' or 'postgresql://...'."
        )
    return optuna.storages.get_storage(storage)


def _sqlite_kwargs(storage: str, create: bool) -> dict[str, Any]:
    """Return a SQLite file's engine arguments, after making its folder.

    Raises:
        ValueError: With ``create=False``, if the file does not exist.
    """
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
    path = sqlite_path(storage)
    if path is not None and not create and not path.exists():
        raise ValueError(
            f"No database at {path} (storage {mask_url(storage)}), so no study there: "
            f"check the path (a relative one counts from {Path.cwd()}) or the URL the "
            "study was created with."
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return engine_kwargs


def _rdb_storage(
    storage: str,
    engine_kwargs: dict[str, Any],
    heartbeat_interval: int | None,
    grace_period: int | None,
    checked: bool,
) -> RDBStorage:
    """Build the ``RDBStorage``; a failure is a ValueError with the masked URL and a fix.

    Several processes opening one fresh database at once (the ranks of a torchrun
    script, workers started together) race to create Optuna's tables: the losers
    get "already exists" or a unique-constraint error. They try again after a
    moment, when the winner's tables are there.
    """
    for attempt in range(_SCHEMA_RACE_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    skip_compatibility_check=not checked,
                    skip_table_creation=not checked,
                )
        except Exception as err:  # noqa: BLE001 - re-raised with the masked URL and a fix.
            if _lost_schema_race(err) and attempt + 1 < _SCHEMA_RACE_TRIES:
                time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
                continue
            raise ValueError(
                f"Could not open the storage {mask_url(storage)}: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}. Check that the database "
                "server is running and the URL (driver, host, port, database, user) is right."
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _lost_schema_race(err: BaseException) -> bool:
    """Whether ``err`` is another process creating the same tables at the same moment."""
    if isinstance(err, sqlalchemy.exc.IntegrityError):  # its alembic row, or pg_type's
        return True
    text = str(err).lower()
    return isinstance(err, sqlalchemy.exc.DBAPIError) and (
        "already exists" in text or "duplicate" in text
    )


def get_engine(storage: optuna.storages.BaseStorage) -> sqlalchemy.Engine:
    """Return the SQLAlchemy engine under an (optionally cached) RDB storage."""
    backend = getattr(storage, "_backend", storage)
    return backend.engine


def storage_url(storage: optuna.storages.BaseStorage) -> str:
    """Return the URL a worker process needs to open the same storage."""
    backend = getattr(storage, "_backend", storage)
    return backend.url
