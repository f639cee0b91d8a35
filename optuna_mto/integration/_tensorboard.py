"""TensorBoardCallback: one TensorBoard run (event-file folder) per split."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from optuna_mto._extras import missing_extra
from optuna_mto._step.events import ReportResult
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.optuna_internals import experimental_class
from optuna_mto._validation import check_name
from optuna_mto.integration._tracking import current_params, numeric, report_metrics, split_of

__all__ = ["TensorBoardCallback"]


def _writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # pragma: no cover - exercised only without the extra.
        raise missing_extra("TensorBoardCallback", "tensorboard") from err
    return SummaryWriter


def _writer(log_dir: Path) -> Any:
    return _writer_class()(log_dir=str(log_dir))


@experimental_class("0.1.0")
class TensorBoardCallback:
    """Write each split's curve to TensorBoard event files, one folder per split.

    Pass it to ``MTOStudy.optimize(..., callbacks=[TensorBoardCallback("runs")])`` and
    run ``tensorboard --logdir runs``. Each split writes to
    ``<log_dir>/<study>/split<k>``: the split's fitness (``metric_name``), whether a
    transfer was kept, and every numeric hyperparameter's current value
    (``hparams/<name>``) at each report; when the split ends, its hyperparameters and
    final value (TensorBoard's HParams tab) and its state as text. A retried split
    appends to the same folder. Written with :class:`torch.utils.tensorboard.SummaryWriter`.
    A Lightning ``TensorBoardLogger(log_dir, name=study_name, version=f"split{trial.split}")``
    writes the module's ``self.log`` metrics into the same run.

    Args:
        log_dir: Root folder of the event files.
        metric_name: Name of the logged fitness (the split's value after each report's
            transfer decision).
    """

    def __init__(self, log_dir: str | os.PathLike[str], metric_name: str = "value") -> None:
        check_name("metric_name", metric_name)
        self.log_dir = Path(log_dir)
        self.metric_name = metric_name
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, int], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Process workers get a copy without the lock and open writers.
        return {"log_dir": self.log_dir, "metric_name": self.metric_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def prepare(self, study: optuna.Study) -> None:
        """Check TensorBoard's writer and make the folder (``optimize`` calls it up front).

        Raises:
            ImportError: Without TensorBoard.
            PermissionError: If the folder cannot be written.
        """
        _writer_class()
        folder = self.log_dir / study.study_name
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"cannot write TensorBoard event files to {folder}")

    def split_dir(self, study_name: str, split: int) -> Path:
        """Return the event-file folder of ``split``."""
        return self.log_dir / study_name / f"split{split}"

    def _get(self, study_name: str, split: int) -> Any:
        key = (study_name, split)
        with self._lock:
            if key not in self._writers:
                self._writers[key] = _writer(self.split_dir(study_name, split))
            return self._writers[key]

    def on_report(self, trial: SplitTrial, result: ReportResult) -> None:
        """Write one report of a split (called by ``optimize`` at every report)."""
        key = (trial.optuna_trial.study.study_name, trial.split)
        first = key not in self._writers
        writer = self._get(*key)
        if first and trial.resumed_at is not None:
            # The killed run may have checkpointed this step without writing it.
            step, fitness = trial.resumed_at
            if math.isfinite(fitness):
                writer.add_scalar(self.metric_name, fitness, step)
        for key, value in report_metrics(result, trial.current_params, self.metric_name).items():
            writer.add_scalar(key, value, result.step)
        writer.flush()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Write the split's result and close its writer (called when the split ends)."""
        split = split_of(trial)
        if split is None:
            return
        writer = self._get(study.study_name, split)
        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in current_params(trial).items()
        }
        metrics = numeric({f"final_{self.metric_name}": trial.value})
        if hparams and metrics:
            writer.add_hparams(hparams, metrics, run_name=".")
        writer.add_text("state", f"trial {trial.number}: {trial.state.name}")
        writer.flush()
        with self._lock:
            self._writers.pop((study.study_name, split), None)
        writer.close()
