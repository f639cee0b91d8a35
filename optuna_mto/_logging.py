"""Log lines of optuna-mto, shown like Optuna's own whatever runs the splits.

Optuna gives its library logger a stderr handler at INFO, so that "Trial 3
finished ..." lines show without any logging set-up. optuna-mto does the same for
its ``optuna_mto`` logger, in the calling process and in every worker process, so
that "Trial N runs split k" and "Trial N finished split k" read the same with the
inline, thread and process executors. An application that configured logging
itself (a handler on the root logger) keeps full control: nothing is added then.
"""

from __future__ import annotations

import logging
import threading

import optuna

__all__ = ["LIBRARY_LOGGER", "configure_default_handler"]

LIBRARY_LOGGER = "optuna_mto"
_lock = threading.Lock()
_handler: logging.Handler | None = None


def configure_default_handler(level: int | None = None) -> None:
    """Give the ``optuna_mto`` logger Optuna's stderr handler, once, unless logging is set up.

    Args:
        level: The logger's level; default: Optuna's verbosity (so that
            ``optuna.logging.set_verbosity(optuna.logging.WARNING)`` quiets both).
    """
    global _handler
    with _lock:
        logger = logging.getLogger(LIBRARY_LOGGER)
        if _handler is not None or logger.handlers or logging.getLogger().handlers:
            return
        _handler = logging.StreamHandler()  # stderr, as Optuna's
        _handler.setFormatter(optuna.logging.create_default_formatter())
        logger.addHandler(_handler)
        logger.setLevel(optuna.logging.get_verbosity() if level is None else level)
        logger.propagate = False
