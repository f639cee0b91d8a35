"""MLflowCallback: one MLflow run per split, with its curve and hyperparameters."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from optuna_mto._extras import missing_extra
from optuna_mto._step.events import ReportResult
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.optuna_internals import experimental_class
from optuna_mto._storage.schema import CROSS_SCORES_ATTR
from optuna_mto._validation import check_name
from optuna_mto.integration._tracking import (
    STATUS,
    current_params,
    report_metrics,
    split_of,
)

__all__ = ["MLflowCallback"]

_STUDY_TAG = "optuna_mto.study"
_SPLIT_TAG = "optuna_mto.split"


def _client(tracking_uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:  # pragma: no cover - exercised only without the extra.
        raise missing_extra("MLflowCallback", "mlflow") from err
    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _sqlite_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock next to a SQLite store (its tables are being made)."""
    database = None
    if tracking_uri.startswith("sqlite:") and os.name != "nt":
        import sqlalchemy

        database = sqlalchemy.engine.make_url(tracking_uri).database
    if not database or database == ":memory:" or not Path(database).parent.is_dir():
        yield  # nothing to lock, or MLflow says what is wrong with the path
        return
    import fcntl

    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@experimental_class("0.1.0")
class MLflowCallback:
    """Log each split of a study as one MLflow run: its curve, params and result.

    Pass it to ``MTOStudy.optimize(..., callbacks=[MLflowCallback(...)])``. At every
    report it logs the split's fitness (``metric_name``), whether a transfer was kept
    and the current value of every numeric hyperparameter (``hparams/<name>``, so PBT's
    schedule shows as curves); when the split ends, its sampled params (and the current
    values as ``hparams.current.<name>`` tags), the trial's value (``trial_value``), its
    cross-split mean, and the run's status (FINISHED, KILLED for a pruned split,
    FAILED). A retried split continues the same run. Runs are tagged
    ``optuna_mto.study`` and ``optuna_mto.split``, and use MLflow's client API only
    (no active-run globals), so threads and processes can log side by side. Before any
    split starts, ``optimize`` calls :meth:`prepare`: the store is checked and its tables
    and the experiment made there, once. Send a LightningModule's ``self.log`` metrics to
    the split's run with ``MLFlowLogger(tracking_uri=..., run_id=cb.split_run_id(trial))``.

    Args:
        tracking_uri: MLflow tracking URI, e.g. ``"sqlite:///mlflow.db"`` or a server
            URL; default: MLflow's own default (``MLFLOW_TRACKING_URI``).
        experiment_name: The experiment (created if missing); default: the study name.
        metric_name: Name of the logged fitness (the split's value after each report's
            transfer decision).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        metric_name: str = "value",
    ) -> None:
        check_name("metric_name", metric_name)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.metric_name = metric_name
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], str] = {}
        self._reported: set[tuple[str, int]] = set()  # splits this process reported
        self._client_obj: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Process workers get a copy without the lock, client and run cache.
        return {k: v for k, v in self.__dict__.items() if k in (
            "tracking_uri", "experiment_name", "metric_name")}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    @property
    def client(self) -> Any:
        """The ``mlflow.tracking.MlflowClient`` in use."""
        if self._client_obj is None:
            self._client_obj = _client(self.tracking_uri)
        return self._client_obj

    def prepare(self, study: optuna.Study) -> None:
        """Check the store; make its tables and the experiment (``optimize`` calls it once).

        Called in the process that calls ``optimize``, before any split starts, so the
        workers never race to make MLflow's tables (its migrations of a new SQLite
        database fail when several processes run them at once). A SQLite store is also
        locked meanwhile, for workers started apart (``optuna-mto worker``).

        Raises:
            Exception: MLflow's own, when the store cannot be used.
        """
        import mlflow

        with _sqlite_lock(self.tracking_uri or mlflow.get_tracking_uri()):
            self._experiment_id(self.experiment_name or study.study_name)

    def _experiment_id(self, name: str) -> str:
        client = self.client
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # made by another process meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def split_run_id(self, trial: SplitTrial) -> str:
        """Return the run of ``trial``'s split (for Lightning's ``MLFlowLogger(run_id=...)``)."""
        return self.run_id(trial.optuna_trial.study.study_name, trial.split)

    def run_id(self, study_name: str, split: int) -> str:
        """Return the run of ``split`` (found by its tags, or created)."""
        key = (study_name, split)
        with self._lock:
            if key in self._runs:
                return self._runs[key]
            client = self.client
            experiment_id = self._experiment_id(self.experiment_name or study_name)
            found = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{_STUDY_TAG}` = '{study_name}' and "
                f"tags.`{_SPLIT_TAG}` = '{split}'",
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
            else:
                tags = {_STUDY_TAG: study_name, _SPLIT_TAG: str(split)}
                run = client.create_run(
                    experiment_id, run_name=f"{study_name}-split{split}", tags=tags
                )
                run_id = run.info.run_id
            self._runs[key] = run_id
            return run_id

    def on_report(self, trial: SplitTrial, result: ReportResult) -> None:
        """Log one report of a split (called by ``optimize`` at every report)."""
        key = (trial.optuna_trial.study.study_name, trial.split)
        run_id = self.run_id(*key)
        with self._lock:
            first = key not in self._reported
            self._reported.add(key)
        if first and trial.resumed_at is not None:
            # The killed run may have checkpointed this step without logging it.
            step, fitness = trial.resumed_at
            logged = {m.step for m in self.client.get_metric_history(run_id, self.metric_name)}
            if step not in logged and math.isfinite(fitness):
                self.client.log_metric(run_id, self.metric_name, fitness, step=step)
        for key, value in report_metrics(result, trial.current_params, self.metric_name).items():
            self.client.log_metric(run_id, key, value, step=result.step)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Finish the split's run (called by ``optimize`` when the split ends)."""
        split = split_of(trial)
        if split is None:
            return
        run_id = self.run_id(study.study_name, split)
        client = self.client
        existing = client.get_run(run_id).data.params
        for key, value in trial.params.items():
            if key not in existing:
                client.log_param(run_id, key, value)
        for key, value in current_params(trial).items():
            client.set_tag(run_id, f"hparams.current.{key}", str(value))
        client.set_tag(run_id, "optuna.trial_number", str(trial.number))
        client.set_tag(run_id, "optuna.state", trial.state.name)
        if trial.value is not None:
            client.log_metric(run_id, "trial_value", float(trial.value))
        scores = trial.user_attrs.get(CROSS_SCORES_ATTR)
        if scores:
            client.log_metric(run_id, "cross_split_mean", sum(scores) / len(scores))
        client.set_terminated(run_id, status=STATUS.get(trial.state, "FAILED"))
        with self._lock:
            self._runs.pop((study.study_name, split), None)
            self._reported.discard((study.study_name, split))
