"""What ``MTOStudy.optimize`` does: check the inputs, pick an executor, run the workers.

Everything here runs on the opened study (:class:`~optuna_mto._workers.runtime.StudyRuntime`);
only the progress monitor and optuna-dashboard's publisher are handed the public
``MTOStudy`` (``watched``), as they take one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from optuna_mto._data.dataset import bind_dataset, dataset_info
from optuna_mto._logging import get_logger
from optuna_mto._step.handle import EvaluateFn
from optuna_mto._study import callbacks as _callbacks
from optuna_mto._study.config import check_objective_direction
from optuna_mto._study.frameworks import refuse_untrainable_companions
from optuna_mto._study.main_guard import exit_if_worker_bootstrap
from optuna_mto._study.monitor import StudyMonitor
from optuna_mto._study.outputs import score_outputs
from optuna_mto._study.results import raise_if_given_up, study_summary
from optuna_mto._study.summary import CrossSplitSummary
from optuna_mto._study.task import check_objective_task
from optuna_mto._workers import distributed as _distributed
from optuna_mto._workers import execution as _execution
from optuna_mto._workers.executors import run_processes, run_threads
from optuna_mto._workers.interrupts import stop_on_signals
from optuna_mto._workers.lifecycle import split_statuses, work_left
from optuna_mto._workers.worker import Job, Worker

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["announce_default_output", "run_optimize", "score_outputs_after_optimize"]

_logger = get_logger(__name__)


def run_optimize(
    rt: StudyRuntime, objective: Callable[..., Any], *, watched: MTOStudy, **kwargs: Any
) -> None:
    """Run every split of the study that is not complete yet (see ``MTOStudy.optimize``).

    Under torchrun (``WORLD_SIZE > 1``) the process group runs one split at a time: rank 0
    runs the study, the other ranks follow it (see :mod:`optuna_mto._workers.distributed`).

    Args:
        rt: The opened study.
        objective: The user's objective.
        watched: The public study, for the progress monitor and the dashboard.
        **kwargs: The other arguments of ``MTOStudy.optimize``.
    """
    group, kwargs["devices"] = _distributed.join(
        kwargs["n_jobs"], kwargs["executor"], kwargs["devices"]
    )
    if group is None:
        _run_optimize(rt, objective, watched, **kwargs)
    elif group.rank > 0:
        _distributed.follow(group, objective)
    else:
        with _distributed.leading(group):
            _run_optimize(rt, objective, watched, **kwargs)


def _run_optimize(
    rt: StudyRuntime,
    objective: Callable[..., Any],
    watched: MTOStudy,
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
    """Check the inputs, run the workers, then score and name the outputs."""
    exit_if_worker_bootstrap()  # a worker re-running an unguarded script
    dataset = getattr(objective, "dataset", None) if dataset is None else dataset
    targets = getattr(objective, "targets", None) if targets is None else targets
    evaluate = getattr(objective, "evaluate", None) if evaluate is None else evaluate
    _check_objective(rt, objective, evaluate)
    n_samples, targets = bind_dataset(rt, dataset, targets)
    left = work_left(rt)
    if not left.claimable and not left.running:
        _logger.info("Study %r has no split left to run.", rt.study_name)
        raise_if_given_up(rt)
        return
    callbacks = _checked_callbacks(callbacks)
    _prepare_objective(rt, objective)
    mode = _execution.resolve_executor(executor, n_jobs, objective, evaluate, dataset, *callbacks)
    devices = _execution.assign_devices(n_jobs, devices)
    _callbacks.prepare_callbacks(callbacks, rt.study)  # trackers: store checked, tables made
    guarded, run = _callbacks.guard(callbacks)  # a callback's error never stops a split
    deadline = None if timeout is None else time.monotonic() + timeout
    job = Job(objective, evaluate, n_samples, targets, deadline, callbacks=guarded)
    monitor = StudyMonitor(watched, progress=show_progress, publisher=_publisher(dashboard))
    _run_workers(rt, job, mode, devices, timeout, monitor, run)
    _finish_run(rt, objective, evaluate, given_up_check=deadline is None, run=run)


def _check_objective(
    rt: StudyRuntime, objective: Callable[..., Any], evaluate: EvaluateFn | None
) -> None:
    """Refuse an objective that does not fit the study, before anything runs.

    Raises:
        ValueError: On a wrong direction, task or companion, or a transfer without an
            evaluate function.
    """
    check_objective_direction(objective, rt.direction, rt.study_name)
    check_objective_task(objective, rt)
    refuse_untrainable_companions(objective, rt.transfer)
    if rt.transfer.enabled and evaluate is None:
        raise ValueError(
            "Transfer needs an evaluate function to score donors on each split's own "
            "validation set: pass optimize(..., evaluate=fn) with fn(model, indices) -> "
            "float, or create the study with transfer=optuna_mto.transfer.NoTransfer()."
        )


def _checked_callbacks(callbacks: Sequence[Callable[..., Any]] | None) -> list[Callable[..., Any]]:
    """The callbacks as a list; ValueError if one is not callable."""
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if not callable(callback):
            raise ValueError(
                f"Each callback must be callable as callback(study, frozen_trial), but got "
                f"{callback!r}."
            )
    return callbacks


def _prepare_objective(rt: StudyRuntime, objective: Callable[..., Any]) -> None:
    """Let the objective check its inputs once; warn if its steps never reach a transfer."""
    if callable(getattr(objective, "check_inputs", None)):
        objective.check_inputs()  # e.g. one trial batch: shape errors once, no retries
    epochs = getattr(objective, "epochs", None)  # SupervisedTrainer: steps known up front
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        rt.transfer.warn_if_never_transfers(epochs)


def _run_workers(
    rt: StudyRuntime,
    job: Job,
    mode: str,
    devices: Sequence[str | torch.device],
    timeout: float | None,
    monitor: StudyMonitor,
    run: str,
) -> None:
    """Run the splits inline, in threads or in processes, while ``monitor`` watches.

    Raises:
        KeyboardInterrupt: After Ctrl-C or SIGTERM, once every split has stopped.
    """
    try:
        with monitor:
            if mode == "inline":  # Ctrl-C interrupts the split at once, where it is
                Worker(rt, job, devices[0]).run()
            else:
                with stop_on_signals(job.stop):
                    if mode == "thread":
                        run_threads(rt, job, devices)
                    else:
                        run_processes(rt, job, devices, timeout)
                if job.stop.is_set():
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        resume = [s.split for s in split_statuses(rt) if s.state == "failed"]
        _logger.warning(
            "interrupted: %d split(s) will resume on the next run %s", len(resume), resume
        )
        _callbacks.log_error(rt.study, run)
        raise


def _finish_run(
    rt: StudyRuntime, objective: Any, evaluate: Any, *, given_up_check: bool, run: str
) -> None:
    """After the workers: refuse given-up splits, score and name the outputs, then callbacks.

    Args:
        rt: The opened study.
        objective: The user's objective.
        evaluate: The evaluate function, if any.
        given_up_check: Raise for given-up splits (not after a timeout: splits left
            unclaimed are not given up).
        run: This ``optimize`` run's id (the callbacks' failures are counted under it).
    """
    try:
        if given_up_check:
            raise_if_given_up(rt, after_run=True)
        summary = score_outputs_after_optimize(rt, objective, evaluate, study_summary(rt))
        announce_default_output(rt, summary)
    except Exception:
        _callbacks.log_error(rt.study, run)  # not silently, even under another error
        raise
    failed = _callbacks.callbacks_error(rt.study, run)
    if failed is not None:
        raise failed


def score_outputs_after_optimize(
    rt: StudyRuntime, objective: Any, evaluate: Any, summary: CrossSplitSummary
) -> CrossSplitSummary:
    """Score the final outputs once the study is complete, if it can be done honestly.

    Needs a selection set (rows no split trained on), an evaluate function and an
    objective that builds models (``objective.model_fn``, as :class:`SupervisedTrainer`).

    Returns:
        ``summary`` (the study's, as the run left it), with the new scores if scored.
    """
    model_fn = getattr(objective, "model_fn", None)
    info = dataset_info(rt)
    if model_fn is None or evaluate is None or info is None or not summary.complete:
        return summary
    rows = rt.plan(int(info["n_samples"]), None).selection
    if not len(rows):
        return summary
    out = score_outputs(rt, model_fn, evaluate, rows, summary=summary)
    return dataclasses.replace(summary, outputs=out)


def announce_default_output(rt: StudyRuntime, summary: CrossSplitSummary | None = None) -> None:
    """Name a complete study's default output (the ensemble or, per its manager, the soup)."""
    summary, key = summary or study_summary(rt), rt.transfer.default_output
    if not summary.complete:
        return
    name, scored = key.replace("_", " "), summary.outputs or {}  # "ensemble", "uniform soup"
    main, single, scores = scored.get(key, {}), scored.get("single", {}), ""
    if "score" in main and "score" in single:
        scores = (f" (on the {scored['rows']} selection rows: {name} {main['score']:.4f}, "
                  f"best single split {single['score']:.4f})")  # fmt: skip
    _logger.info(
        "Study %r is complete. Its default output is the %s of its %d models%s: study.%s or "
        "optuna-mto export; study.load_best_model(model) gives the best split's model alone.",
        rt.study_name, name, len(summary.ranking), scores,
        "soup(make_model, 'uniform')" if key == "uniform_soup"
        else "ensemble(make_model), study.export_ensemble(path)",
    )  # fmt: skip


def _publisher(dashboard: bool) -> Callable[[MTOStudy, bool], None] | None:
    """optuna-dashboard's publisher for the monitor, if wanted and installed."""
    if not dashboard or importlib.util.find_spec("optuna_dashboard") is None:
        return None
    from optuna_mto.visualization import refresh_dashboard

    return lambda study, force: refresh_dashboard(study, force=force)
