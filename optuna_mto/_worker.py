"""Workers: claim a split of a study, run it as a trial, repeat; in threads or processes."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from optuna_mto import _execution
from optuna_mto._claims import SplitClaim, plan_next_claim
from optuna_mto._retry import retry_transient
from optuna_mto._storage import storage_url
from optuna_mto._trial import EvaluateFn, SplitTrial, _Shared

if TYPE_CHECKING:
    from optuna_mto._study import MTOStudy

__all__ = ["Job", "Worker", "run_processes", "run_threads", "work_left"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Job:
    """What every worker of one ``optimize`` call runs.

    Attributes:
        objective: The user's objective.
        evaluate: ``evaluate(model, indices) -> float``, or None.
        n_samples: Rows in the dataset.
        targets: Class labels, or None.
        deadline: ``time.monotonic()`` after which no new split is claimed.
        stop: Set to make every split stop at its next report (Ctrl-C).
    """

    objective: Callable[[SplitTrial], Any]
    evaluate: EvaluateFn | None
    n_samples: int
    targets: np.ndarray | None
    deadline: float | None = None
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


def work_left(study: MTOStudy) -> tuple[dict[int, SplitClaim], list[tuple[int, int]], int]:
    """Return the latest claims, the claimable (split, attempt) pairs, the running count.

    Trials whose heartbeat went stale are marked failed first, so they count as
    claimable (for a retry), not as running.
    """
    heartbeat_s = study._open_kwargs.get("heartbeat_interval")
    orphan_after = datetime.timedelta(seconds=max(60, 2 * (heartbeat_s or 30)))
    backend = getattr(study.study._storage, "_backend", study.study._storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_transient(optuna.storages.fail_stale_trials, study.study)
    latest = retry_transient(study._claims.latest)
    states = {
        c.trial_id: retry_transient(backend.get_trial, c.trial_id).state
        for c in latest.values()
        if c.trial_id is not None
    }
    plan = plan_next_claim(study.n_splits, latest, states, study.config.max_retries, orphan_after)
    running = sum(
        1 for c in latest.values() if c.trial_id is None or states[c.trial_id] == TrialState.RUNNING
    )
    return latest, plan, running


class Worker:
    """Claims unfinished splits of a study one by one and runs each as a trial.

    Args:
        study: The study.
        job: What to run.
        device: This worker's device (its model lives there).
    """

    def __init__(self, study: MTOStudy, job: Job, device: str) -> None:
        self.study = study
        self.job = job
        self.device = device
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def run(self) -> None:
        """Run splits until none is left to claim, the deadline passed, or stop is set."""
        study, job = self.study, self.job
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        shared = _Shared(
            storage=study.study._storage,
            study_id=study.study._study_id,
            study_name=study.study_name,
            direction=study.direction,
            n_splits=study.n_splits,
            seed=study.config.seed,
            plan=study._plan(job.n_samples, job.targets),
            store=study.checkpoint_store,
            board=study._board,
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
        heartbeat_s = self.study._open_kwargs.get("heartbeat_interval")
        while True:
            latest, plan, running = work_left(self.study)
            for split, attempt in plan:
                if retry_transient(self.study._claims.try_claim, split, attempt, self.name):
                    return split, attempt, latest.get(split)
            if not running or heartbeat_s is None:
                return None
            time.sleep(min(2.0, float(heartbeat_s)))

    def _run_split(
        self, shared: _Shared, split: int, attempt: int, previous: SplitClaim | None
    ) -> None:
        study = self.study.study
        system_attrs: dict[str, Any] = {"mto:split": split, "mto:attempt": attempt}
        resume = None
        if previous is not None:
            if previous.trial_id is not None:
                system_attrs["mto:retried_from"] = previous.trial_id
            # The split's last record is from an earlier, failed attempt: resume from it.
            record = retry_transient(self.study._board.read).get(split)
            if record is not None and not record.finished:
                resume = record
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params={"split": split},
            distributions={"split": IntDistribution(0, max(self.study.n_splits - 1, 1))},
            user_attrs={
                "split": split,
                "attempt": attempt,
                "device": self.device,
                "worker": self.name,
            },  # fmt: skip
            system_attrs=system_attrs,
            intermediate_values={},
            trial_id=-1,
        )
        storage = study._storage
        # One transaction: a failed try leaves no half-made trial behind.
        trial_id = retry_transient(
            storage.create_new_trial, study._study_id, template_trial=template
        )
        retry_transient(self.study._claims.attach_trial, split, attempt, trial_id)
        trial = optuna.Trial(study, trial_id)
        split_trial = SplitTrial(shared, trial, split, attempt, self.device, resume_from=resume)
        _logger.info(
            "Trial %d runs split %d (attempt %d) on %s.", trial.number, split, attempt, self.device
        )
        with _execution.heartbeat(storage, trial_id):
            try:
                returned = self.job.objective(split_trial)
                scores = split_trial.finish()
            except BaseException as err:
                reason = f"{type(err).__name__}: {err}"
                retry_transient(storage.set_trial_system_attr, trial_id, "fail_reason", reason)
                if isinstance(err, KeyboardInterrupt):  # the user's stop is not a crash
                    retry_transient(self.study._claims.mark_interrupted, split, attempt)
                self._tell(trial, state=TrialState.FAIL)
                raise
        if returned is not None:
            retry_transient(trial.set_user_attr, "objective_value", float(returned))
        if split_trial.selection_score is not None:
            value = split_trial.selection_score  # the honest, held-out estimate
        elif scores:
            value = float(np.mean(scores))
        elif returned is not None:
            value = float(returned)
        else:
            retry_transient(storage.set_trial_system_attr, trial_id, "fail_reason", "no value")
            self._tell(trial, state=TrialState.FAIL)
            raise ValueError(
                "The objective returned None and reported no model: return a value or call "
                "trial.report(value, step, model=model) with an evaluate function."
            )
        self._tell(trial, values=value)

    def _tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        retry_transient(self.study.study.tell, trial, skip_if_finished=True, **kwargs)


def run_threads(study: MTOStudy, job: Job, devices: list[str]) -> None:
    """Run one worker thread per device; re-raise the first worker error at the end."""
    torch.set_num_threads(_execution.cpu_threads_per_worker(len(devices)))
    errors: list[BaseException] = []

    def run(device: str) -> None:
        try:
            Worker(study, job, device).run()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller.
            errors.append(err)

    threads = [
        threading.Thread(target=run, args=(d,), name=f"mto-{i}") for i, d in enumerate(devices)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        # Ctrl-C lands in this thread only: the workers stop at their next report,
        # marking their trials failed so that the next run resumes them.
        job.stop.set()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]


def run_processes(
    study: MTOStudy, job: Job, dataset: Any, devices: list[str], timeout: float | None
) -> None:
    """Run one worker process per device (see :func:`_execution.worker_context`)."""
    ctx = _execution.worker_context()
    threads = _execution.cpu_threads_per_worker(len(devices))
    custom = study.config.artifact_store["kind"] == "custom"
    payload = {
        "study_name": study.study_name,
        "storage": storage_url(study.study._storage),
        "open_kwargs": study._open_kwargs,
        "transfer": study.transfer,
        "artifact_store": study.checkpoint_store.artifact_store if custom else None,
        "max_retries": study.config.max_retries,
    }
    procs = []
    for i, device in enumerate(devices):
        args = (payload, job.objective, job.evaluate, dataset, job.targets, device, threads,
                timeout)  # fmt: skip
        proc = ctx.Process(target=_process_main, args=args, name=f"mto-worker-{i}")
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except BaseException:
        # Ctrl-C reached the workers too: give them time to mark their trials FAIL
        # (so the next run resumes them), then stop the stragglers with SIGTERM,
        # which they handle the same way.
        deadline = time.monotonic() + 15
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        raise
    failed = [p for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(procs)} worker processes failed (exit codes "
            f"{[p.exitcode for p in failed]}); their splits are marked FAIL and will be "
            "retried by the next optimize() call. See the log above for the cause."
        )


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _process_main(
    payload: dict[str, Any],
    objective: Callable[[SplitTrial], Any],
    evaluate: EvaluateFn | None,
    dataset: Any,
    targets: Any,
    device: str,
    n_threads: int,
    timeout: float | None,
) -> None:
    from optuna_mto._study import load_study

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    torch.set_num_threads(n_threads)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(levelname)s %(message)s"
    )
    study = load_study(
        study_name=payload["study_name"],
        storage=payload["storage"],
        transfer=payload["transfer"],
        artifact_store=payload["artifact_store"],
        max_retries=payload["max_retries"],
        **payload["open_kwargs"],
    )
    study.optimize(
        objective, dataset=dataset, targets=targets, evaluate=evaluate,
        n_jobs=1, executor="auto", devices=[device], timeout=timeout, dashboard=False,
    )  # fmt: skip
