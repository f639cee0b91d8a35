"""What ``MTOStudy.optimize`` does: check the inputs, pick an executor, run the workers."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from optuna_mto._data.dataset import bind_dataset
from optuna_mto._logging import get_logger
from optuna_mto._step.handle import EvaluateFn
from optuna_mto._study import callbacks as _callbacks
from optuna_mto._study import outputs as _outputs
from optuna_mto._study.config import check_objective_direction
from optuna_mto._study.frameworks import refuse_untrainable_companions
from optuna_mto._study.main_guard import exit_if_worker_bootstrap
from optuna_mto._study.monitor import StudyMonitor
from optuna_mto._study.task import check_objective_task
from optuna_mto._workers import distributed as _distributed
from optuna_mto._workers import execution as _execution
from optuna_mto._workers.executors import run_processes, run_threads
from optuna_mto._workers.interrupts import stop_on_signals
from optuna_mto._workers.lifecycle import split_statuses, work_left
from optuna_mto._workers.worker import Job, Worker

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["run_optimize"]

_logger = get_logger(__name__)


def run_optimize(study: MTOStudy, objective: Callable[..., Any], **kwargs: Any) -> None:
    """Run every split of ``study`` that is not complete yet (see ``MTOStudy.optimize``).

    Under torchrun (``WORLD_SIZE > 1``) the process group runs one split at a time: rank 0
    runs the study, the other ranks follow it (see :mod:`optuna_mto._workers.distributed`).
    """
    group, kwargs["devices"] = _distributed.join(
        kwargs["n_jobs"], kwargs["executor"], kwargs["devices"]
    )
    if group is None:
        _run_optimize(study, objective, **kwargs)
    elif group.rank > 0:
        _distributed.follow(group, objective)
    else:
        with _distributed.leading(group):
            _run_optimize(study, objective, **kwargs)


def _run_optimize(
    study: MTOStudy,
    objective: Callable[..., Any],
    *,
    dataset: Any,
    targets: Any,
    evaluate: EvaluateFn | None,
    n_jobs: int,
    executor: str,
    devices: Sequence[str | torch.device] | None,
    timeout: float | None,
    show_progress: bool,
    dashboard: bool,
    callbacks: Sequence[Callable[..., Any]] | None,
) -> None:
    """Run every split of ``study`` that is not complete yet (see ``MTOStudy.optimize``)."""
    exit_if_worker_bootstrap()  # a worker re-running an unguarded script
    dataset = getattr(objective, "dataset", None) if dataset is None else dataset
    targets = getattr(objective, "targets", None) if targets is None else targets
    evaluate = getattr(objective, "evaluate", None) if evaluate is None else evaluate
    check_objective_direction(objective, study.direction, study.study_name)
    check_objective_task(objective, study._rt)
    refuse_untrainable_companions(objective, study.transfer)
    if study.transfer.enabled and evaluate is None:
        raise ValueError(
            "Transfer needs an evaluate function to score donors on each split's own "
            "validation set: pass optimize(..., evaluate=fn) with fn(model, indices) -> "
            "float, or create the study with transfer=optuna_mto.transfer.NoTransfer()."
        )
    n_samples, targets = bind_dataset(study._rt, dataset, targets)
    left = work_left(study._rt)
    if not left.claimable and not left.running:
        _logger.info("Study %r has no split left to run.", study.study_name)
        study._raise_if_given_up()
        return
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if not callable(callback):
            raise ValueError(
                f"Each callback must be callable as callback(study, frozen_trial), but got "
                f"{callback!r}."
            )
    if callable(getattr(objective, "check_inputs", None)):
        objective.check_inputs()  # e.g. one trial batch: shape errors once, no retries
    epochs = getattr(objective, "epochs", None)  # SupervisedTrainer: steps known up front
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        study.transfer.warn_if_never_transfers(epochs)
    mode = _execution.resolve_executor(executor, n_jobs, objective, evaluate, dataset, *callbacks)
    devices = _execution.assign_devices(n_jobs, devices)
    _callbacks.prepare_callbacks(callbacks, study.study)  # trackers: store checked, tables made
    guarded, run = _callbacks.guard(callbacks)  # a callback's error never stops a split
    deadline = None if timeout is None else time.monotonic() + timeout
    job = Job(
        objective, evaluate, n_samples, targets, deadline,
        callbacks=guarded,
    )  # fmt: skip
    try:
        with StudyMonitor(study, progress=show_progress, publisher=_publisher(dashboard)):
            if mode == "inline":  # Ctrl-C interrupts the split at once, where it is
                Worker(study._rt, job, devices[0]).run()
            else:
                with stop_on_signals(job.stop):
                    if mode == "thread":
                        run_threads(study._rt, job, devices)
                    else:
                        run_processes(study._rt, job, devices, timeout)
                if job.stop.is_set():
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        resume = [s.split for s in split_statuses(study._rt) if s.state == "failed"]
        _logger.warning(
            "interrupted: %d split(s) will resume on the next run %s", len(resume), resume
        )
        _callbacks.log_error(study.study, run)
        raise
    try:
        if deadline is None:
            study._raise_if_given_up(after_run=True)
        _outputs.score_outputs_after_optimize(study, objective, evaluate)
        _outputs.announce_default_output(study)
    except Exception:
        _callbacks.log_error(study.study, run)  # not silently, even under another error
        raise
    failed = _callbacks.callbacks_error(study.study, run)
    if failed is not None:
        raise failed


def _publisher(dashboard: bool) -> Callable[[MTOStudy, bool], None] | None:
    """optuna-dashboard's publisher for the monitor, if wanted and installed."""
    if not dashboard or importlib.util.find_spec("optuna_dashboard") is None:
        return None
    from optuna_mto.visualization import refresh_dashboard

    return lambda study, force: refresh_dashboard(study, force=force)
