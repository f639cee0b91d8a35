"""Logging the Optuna way: optuna-mto's loggers are children of Optuna's library logger.

Every module logs through :func:`get_logger`, which returns ``optuna.optuna_mto.<module>``.
Those records therefore follow :func:`optuna.logging.set_verbosity`,
:func:`optuna.logging.disable_default_handler` and
:func:`optuna.logging.enable_propagation` exactly like Optuna's own, and are printed by
Optuna's default handler (stderr, ``[I 2026-11-28 10:00:00,000] ...``). Library code
never calls :func:`logging.basicConfig`.

Worker processes send their records to the parent through a queue
(:func:`forward_to_queue` in the child, :func:`QueueForwarder` in the parent), so they
reach the parent's handlers and obey the parent's verbosity.
"""

from __future__ import annotations

import logging
import logging.handlers
from typing import Any

import optuna

__all__ = ["LOGGER_ROOT", "QueueForwarder", "forward_to_queue", "get_logger"]

#: The root of optuna-mto's loggers, inside Optuna's library logger.
LOGGER_ROOT = "optuna.optuna_mto"


def get_logger(name: str) -> logging.Logger:
    """Return the logger of module ``name`` (``optuna_mto.x`` -> ``optuna.optuna_mto.x``).

    Args:
        name: The module's ``__name__``.
    """
    suffix = name.split("optuna_mto", 1)[1] if name.startswith("optuna_mto") else f".{name}"
    # optuna.logging.get_logger installs Optuna's default handler on first use.
    return optuna.logging.get_logger(LOGGER_ROOT + suffix)


def forward_to_queue(queue: Any, verbosity: int) -> None:
    """In a worker process: send every ``optuna`` record to the parent through ``queue``.

    Replaces the handlers of Optuna's library logger by one ``QueueHandler`` and sets the
    parent's verbosity, so that the parent decides how (and whether) records are shown.

    Args:
        queue: A ``multiprocessing`` queue the parent's :class:`QueueForwarder` reads.
        verbosity: The parent's :func:`optuna.logging.get_verbosity`.
    """
    root = logging.getLogger("optuna")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(verbosity)
    root.propagate = False


class _Dispatch(logging.Handler):
    """Hand a forwarded record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


class QueueForwarder:
    """In the parent: replay records sent by worker processes through the parent's loggers.

    Use as a context manager around the worker processes' lifetime.

    Args:
        queue: The queue the workers' :func:`forward_to_queue` writes to.
    """

    def __init__(self, queue: Any) -> None:
        self._listener = logging.handlers.QueueListener(queue, _Dispatch())

    def __enter__(self) -> QueueForwarder:
        self._listener.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.stop()
