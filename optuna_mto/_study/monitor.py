"""Watching a running study: the live progress view and optuna-dashboard figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optuna_mto._logging import get_logger
from optuna_mto._storage.retry import retry_transient
from optuna_mto._study.progress import ProgressView

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["StudyMonitor"]

_logger = get_logger(__name__)


class StudyMonitor:
    """A daemon thread that follows the blackboard while ``optimize`` runs.

    It reads the K latest records (one query) every ``interval_s`` seconds, whichever
    worker, process or machine published them, and feeds a :class:`ProgressView`
    (per split: step, fitness, transfers kept/tried, ETA). With a ``publisher`` it
    also calls ``publisher(study, force)`` at each look (optuna-dashboard's figures
    and note: the publisher decides how often it really publishes; ``force`` once more
    at the end). Neither ever interrupts training.

    Args:
        study: The study to watch.
        progress: Show the progress view.
        publisher: Called as ``publisher(study, force)``; None publishes nothing.
        interval_s: Seconds between looks at the blackboard.
    """

    def __init__(
        self,
        study: MTOStudy,
        *,
        progress: bool,
        publisher: Callable[[Any, bool], None] | None = None,
        interval_s: float = 0.5,
    ) -> None:
        self._study = study
        self._view = ProgressView(study.n_splits) if progress else None
        self._publisher = publisher
        self._interval_s = interval_s
        self._steps: dict[int, int] = {}  # furthest step seen per split
        self._runs: dict[int, int] = {}  # trial id of the run whose start the view knows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mto-monitor", daemon=True)

    def __enter__(self) -> StudyMonitor:
        if self._view is not None or self._publisher is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._tick(force=True)
        if self._view is not None:
            self._view.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._tick(force=False)

    def _tick(self, *, force: bool) -> None:
        try:
            if self._view is not None:
                for split, record in sorted(retry_transient(self._study.records).items()):
                    if record.started is not None and self._runs.get(split) != record.trial_id:
                        # Time the run from its start, so the ETA shows from the first step.
                        ago = max(time.time() - record.started, 0.0)
                        self._view.start(
                            split, record.total_steps, record.first_step,
                            at=time.monotonic() - ago,
                        )  # fmt: skip
                        self._runs[split] = record.trial_id
                        self._steps.pop(split, None)
                    # A finished split's record names its best step; show how far it got.
                    step = max(record.step, self._steps.get(split, -1))
                    if record.finished and record.total_steps:
                        step = record.total_steps - 1
                    self._steps[split] = step
                    self._view.update(
                        split, step, record.total_steps, record.fitness,
                        record.accepted, record.tried,
                    )  # fmt: skip
            if self._publisher is not None:
                self._publisher(self._study, force)
        except Exception as err:  # noqa: BLE001 - watching must never stop training.
            _logger.warning("Progress monitor: %s", err)
