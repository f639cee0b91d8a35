"""Retrying storage calls that fail transiently (dropped connection, database locked)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy

from optuna_mto._logging import get_logger

__all__ = ["TRANSIENT_ERRORS", "connection_limit_hint", "retry_transient"]

_logger = get_logger(__name__)
_jitter = random.Random()  # never touch the global RNG: it is part of a split's checkpoint
T = TypeVar("T")

#: Errors worth another try: Optuna wraps SQLAlchemy errors in StorageInternalError;
#: our own tables raise SQLAlchemy's OperationalError (locks, lost connections) directly.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    ConnectionError,
    TimeoutError,
)


#: What servers say when every connection slot is taken (PostgreSQL, MySQL, pgbouncer).
_LIMIT_MARKERS = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
    "no more connections allowed",
    "max_client_conn",
)


def connection_limit_hint(err: BaseException) -> str | None:
    """Return one line on what to change if ``err`` is a refused connection, else None.

    Looks through the error's chain (Optuna wraps SQLAlchemy's error, which wraps the
    driver's) for the server's "too many clients/connections" answer.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = str(e).lower()
        if any(marker in text for marker in _LIMIT_MARKERS):
            return (
                "the database refused a connection because all its connection slots are in "
                "use (PostgreSQL's max_connections, default 100; see SHOW max_connections). "
                "Each worker process holds a few connections: run fewer worker processes "
                "per database (n_jobs, optuna-mto worker), raise max_connections, or put "
                "a connection pooler such as PgBouncer in front of the server"
            )
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return None


def retry_transient(
    fn: Callable[..., T],
    *args: object,
    attempts: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 5.0,
    **kwargs: object,
) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient storage errors with backoff.

    Waits ``base_delay * 2**i`` (capped at ``max_delay``, with jitter) between tries;
    the last error is re-raised after ``attempts`` tries. Every call wrapped here must
    be idempotent (an upsert, a read, a write of a fresh artifact id).
    """
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except TRANSIENT_ERRORS as err:
            if attempt == attempts - 1:
                hint = connection_limit_hint(err)
                if hint is not None:
                    _logger.error("Gave up on the storage after %d tries: %s.", attempts, hint)
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + _jitter.random())
            name = getattr(fn, "__qualname__", repr(fn))
            _logger.warning("%s failed transiently (%s); retry in %.2f s", name, err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
