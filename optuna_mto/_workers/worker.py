"""Workers: claim a split of a study, run it as a trial, repeat."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from optuna_mto._logging import get_logger
from optuna_mto._step.finish import final_value
from optuna_mto._step.handle import EvaluateFn, Shared
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.optuna_internals import rdb_backend, storage_of, study_id_of, trial_id_of
from optuna_mto._storage.retry import TRANSIENT_ERRORS, retry_transient
from optuna_mto._storage.schema import (
    FAIL_REASON_KEY,
    FAILED_AT_START_KEY,
    OBJECTIVE_VALUE_ATTR,
)
from optuna_mto._workers import distributed as _distributed
from optuna_mto._workers import execution as _execution
from optuna_mto._workers.attempt import trial_template
from optuna_mto._workers.claims import SplitClaim, utc_now
from optuna_mto._workers.exclusive import earlier_attempt_lives, give_up_if_superseded
from optuna_mto._workers.lifecycle import work_left
from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["Job", "Worker"]

_logger = get_logger(__name__)
#: Seconds between two looks of an idle worker at splits that others still run.
_IDLE_POLL_S = 0.25


@dataclasses.dataclass
class Job:
    """What every worker of one ``optimize`` call runs.

    Attributes:
        objective: The user's objective.
        evaluate: ``evaluate(model, indices) -> float``, or None.
        n_samples: Rows in the dataset.
        targets: Class labels, or None.
        deadline: ``time.monotonic()`` after which no new split is claimed.
        since: When the ``optimize`` call began (naive UTC): a split that failed
            before its first report since then is not retried in this call.
        stop: Set to make every split stop at its next report (Ctrl-C).
        callbacks: ``callback(study, frozen_trial)`` after each split ends; those with
            an ``on_report(trial, result)`` method are also called at every report.
    """

    objective: Callable[[SplitTrial], Any]
    evaluate: EvaluateFn | None
    n_samples: int
    targets: np.ndarray | None
    deadline: float | None = None
    since: datetime.datetime = dataclasses.field(default_factory=utc_now)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    callbacks: list[Any] = dataclasses.field(default_factory=list)


class Worker:
    """Claims unfinished splits of a study one by one and runs each as a trial.

    Args:
        runtime: The opened study.
        job: What to run.
        device: This worker's device (its model lives there).
    """

    def __init__(self, runtime: StudyRuntime, job: Job, device: str) -> None:
        self.study = runtime
        self.job = job
        self.device = device
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def run(self) -> None:
        """Run splits until none is left to claim, the deadline passed, or stop is set."""
        study, job = self.study, self.job
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        shared = Shared(
            study_name=study.study_name,
            direction=study.direction,
            n_splits=study.n_splits,
            seed=study.config.seed,
            plan=study.plan(job.n_samples, job.targets),
            store=study.store,
            board=study.board,
            manager=study.transfer,
            evaluate=job.evaluate,
            stop=job.stop,
            loss=getattr(job.objective, "evaluate_loss", None),
        )
        while not job.stop.is_set():
            claim = self._claim()
            if claim is None:
                return
            self._run_split(shared, *claim)
            if job.deadline is not None and time.monotonic() >= job.deadline:
                return

    def _claim(self) -> tuple[int, int, SplitClaim | None] | None:
        """Claim the next split to run; None once every split is finished or given up.

        With heartbeats on, a worker that finds nothing to claim while other splits
        are still running waits for them: if their worker died, their heartbeat goes
        stale, they are marked failed, and this worker resumes them.
        """
        heartbeat_s = self.study.open_kwargs.get("heartbeat_interval")
        while not self.job.stop.is_set():
            left = work_left(self.study)
            for split, attempt in left.claimable:
                if self._failed_at_start(left.latest.get(split)):
                    continue
                if not retry_transient(self.study.claims.try_claim, split, attempt, self.name):
                    continue
                if attempt > 0 and earlier_attempt_lives(self.study, split, attempt):
                    retry_transient(self.study.claims.release, split, attempt, self.name)
                    continue
                return split, attempt, left.latest.get(split)
            if not left.running or heartbeat_s is None:
                return None
            # Short: the study is done, and optimize returns, within this of the last split.
            if self.job.stop.wait(min(_IDLE_POLL_S, float(heartbeat_s))):
                return None
        return None

    def _failed_at_start(self, claim: SplitClaim | None) -> bool:
        """True if ``claim``'s attempt failed before its first report during this call.

        Such an error (a wrong shape, a typo, missing data) happens again on every
        retry: it is reported once, and the split is retried by the next ``optimize``.
        """
        if claim is None or claim.trial_id is None or claim.claimed_at < self.job.since:
            return False
        backend = rdb_backend(storage_of(self.study.study))
        trial = retry_transient(backend.get_trial, claim.trial_id)
        return bool(trial.system_attrs.get(FAILED_AT_START_KEY))

    def _run_split(
        self, shared: Shared, split: int, attempt: int, previous: SplitClaim | None
    ) -> None:
        """Run one claimed split as a trial: create it, run the objective, record its end."""
        template, resume = trial_template(
            self.study, split, attempt, previous, device=self.device, worker=self.name
        )
        trial = self._create_trial(template, split, attempt)
        if trial is None:
            return
        split_trial = SplitTrial(
            shared, trial, split, attempt, self.device, resume_from=resume,
            report_hooks=self.job.callbacks,
        )  # fmt: skip
        _logger.info(
            "Trial %d runs split %d (attempt %d) on %s.", trial.number, split, attempt, self.device
        )
        started = time.monotonic()
        ran = self._run_objective(split_trial)
        if ran is not None:
            self._record(split_trial, *ran, seconds=time.monotonic() - started)

    def _create_trial(self, template: FrozenTrial, split: int, attempt: int) -> optuna.Trial | None:
        """Create the split's trial and attach it to the claim; None if superseded."""
        study = self.study.study
        # One transaction: a failed try leaves no half-made trial behind.
        trial_id = retry_transient(
            storage_of(study).create_new_trial, study_id_of(study), template_trial=template
        )
        retry_transient(self.study.claims.attach_trial, split, attempt, trial_id)
        if give_up_if_superseded(self.study, split, attempt, trial_id):
            return None
        return optuna.Trial(study, trial_id)

    def _run_objective(self, split_trial: SplitTrial) -> tuple[Any, list[float] | None] | None:
        """Run the objective under a heartbeat: what it returned and the final scores.

        None when the run ended otherwise (pruned, taken over, failed): that is
        recorded here. The user's stop (Ctrl-C, SIGTERM, SystemExit) is raised again.
        """
        trial, split = split_trial.optuna_trial, split_trial.split
        with _execution.heartbeat(storage_of(self.study.study), trial_id_of(trial)):
            try:
                returned = _distributed.call_objective(self.job.objective, split_trial)
                return returned, split_trial.finish()
            except optuna.TrialPruned as err:
                # Optuna's meaning: stopped on purpose, not a failure. Never retried.
                split_trial.finish_pruned()
                self._tell(trial, state=TrialState.PRUNED)
                _logger.info("Trial %d (split %d) pruned: %s", trial.number, split, err)
                self._callbacks(trial_id_of(trial))
            except optuna.exceptions.UpdateFinishedTrialError:
                # Failed by another worker: this one's heartbeat was stale (it could not
                # reach the storage). The split is that worker's now; give it up.
                _logger.warning(
                    "Split %d (trial %d) was taken over by another worker: this worker's "
                    "heartbeat went stale (it could not reach the storage). Giving it up.",
                    split, trial.number,
                )  # fmt: skip
            except BaseException as err:
                if self._failed(split_trial, err):
                    raise
        return None

    def _failed(self, split_trial: SplitTrial, err: BaseException) -> bool:
        """Record a run that raised ``err``; True if it is the user's stop, to raise again."""
        trial, split, attempt = split_trial.optuna_trial, split_trial.split, split_trial.attempt
        trial_id, storage = trial_id_of(trial), storage_of(self.study.study)
        reason = f"{type(err).__name__}: {err}"
        retry_transient(storage.set_trial_system_attr, trial_id, FAIL_REASON_KEY, reason)
        at_start = split_trial.n_reports == 0
        if isinstance(err, TRANSIENT_ERRORS):
            pass  # the storage went away for too long: counted as a lost worker
        elif isinstance(err, Exception):  # the user's code failed: uses up a retry
            retry_transient(self.study.claims.mark_errored, split, attempt)
            if at_start:
                retry_transient(storage.set_trial_system_attr, trial_id, FAILED_AT_START_KEY, True)
        else:  # Ctrl-C, SIGTERM, SystemExit: the user's stop is not a failure
            retry_transient(self.study.claims.mark_interrupted, split, attempt)
        self._tell(trial, state=TrialState.FAIL)
        if not isinstance(err, KeyboardInterrupt):
            self._callbacks(trial_id)
        if not isinstance(err, Exception):
            return True
        # Logged here, with the split it belongs to. The split is retried (by this
        # or another worker) while max_retries allows, except after an error at the
        # start, which recurs on every retry; optimize() raises one error naming
        # every split left failed or given up at the end.
        if at_start:
            _logger.warning(
                "Trial %d (split %d) failed before its first report: %s. Not retried "
                "in this optimize call (an error at the start recurs on every retry); "
                "fix it and run optimize again.", trial.number, split,
                reason.rstrip("."), exc_info=err,
            )  # fmt: skip
        else:
            _logger.error(
                "Split %d (trial %d, attempt %d) failed: %s", split, trial.number,
                attempt, reason, exc_info=err,
            )  # fmt: skip
        return False

    def _record(
        self, split_trial: SplitTrial, returned: Any, scores: list[float] | None, seconds: float
    ) -> None:
        """Tell the finished run's value, or fail the trial when it has none."""
        trial, split = split_trial.optuna_trial, split_trial.split
        trial_id = trial_id_of(trial)
        if returned is not None:
            retry_transient(trial.set_user_attr, OBJECTIVE_VALUE_ATTR, float(returned))
        value, reason = final_value(split, scores, split_trial.selection_score, returned)
        if value is None:
            storage = storage_of(self.study.study)
            retry_transient(storage.set_trial_system_attr, trial_id, FAIL_REASON_KEY, reason)
            retry_transient(self.study.claims.mark_errored, split, split_trial.attempt)
            self._tell(trial, state=TrialState.FAIL)
            self._callbacks(trial_id)
            _logger.error("Split %d (trial %d) failed: %s", split, trial.number, reason)
            return
        self._tell(trial, values=value)
        _logger.info(
            "Trial %d finished split %d in %.1f s: %s %.6g.", trial.number, split, seconds,
            "selection score" if split_trial.selection_score is not None else "value", value,
        )  # fmt: skip
        self._callbacks(trial_id)

    def _callbacks(self, trial_id: int) -> None:
        """Call ``callback(study, frozen_trial)`` for a split that ended, as Optuna does."""
        if not self.job.callbacks:
            return
        frozen = retry_transient(storage_of(self.study.study).get_trial, trial_id)
        for callback in self.job.callbacks:
            callback(self.study.study, frozen)

    def _tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        retry_transient(self.study.study.tell, trial, skip_if_finished=True, **kwargs)
