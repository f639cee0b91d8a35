"""Ctrl-C and SIGTERM while splits run in worker threads or processes.

Python raises KeyboardInterrupt in the main thread wherever it is; raised while the
main thread waits for workers, a second Ctrl-C used to abort the process with threads
still inside torch (``terminate called without an active exception``), leaving a split
RUNNING. Here, while workers run, both signals only set the job's stop event: every
split stops at its next report (worker processes at once, on SIGTERM from the parent)
and is marked interrupted, which uses up no retry; further signals just say that the
stop is under way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from optuna_mto._logging import get_logger

__all__ = ["stop_on_signals"]

_logger = get_logger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM set ``stop`` instead of raising.

    Does nothing outside the main thread (signal handlers can only be set there).

    Args:
        stop: The event the workers watch.

    Yields:
        The list of signal numbers received so far.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            stop.set()
            _logger.warning(
                "%s: stopping; running splits stop at their next report and resume on the "
                "next run.",
                signal.Signals(signum).name,
            )
        elif len(received) == 2:
            _logger.warning("Still stopping: waiting for the running splits to stop.")

    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
