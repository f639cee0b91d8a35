"""Where each split stands: lost workers taken over, budgets, splits given up.

A split's attempt ends in one of four ways, and each is counted apart:

- complete (or pruned): the split is done;
- an exception in the user's code: counts against ``max_retries``;
- an interruption (Ctrl-C, SIGTERM): counts against nothing and resumes at once;
- a lost worker (SIGKILL, OOM, segfault, lost heartbeat, host gone): counts against
  ``max_preemptions``, a separate and larger budget, as in Kubernetes Jobs and Ray Tune.

A worker killed on this host is noticed at once (its process id is gone); one on
another host once its heartbeat is stale.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import warnings
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from optuna_mto._errors import SplitsGivenUpError
from optuna_mto._storage.optuna_internals import rdb_backend, storage_of, trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import FAIL_REASON_KEY
from optuna_mto._workers.claims import Budgets, SplitClaim, plan_next_claim

if TYPE_CHECKING:
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["SplitStatus", "WorkLeft", "given_up_error", "split_statuses", "work_left"]

#: Why a worker-lost attempt failed, as recorded in the trial's ``fail_reason``.
LOST_WORKER = "worker lost"


@dataclasses.dataclass(frozen=True)
class WorkLeft:
    """The latest claims, the claimable ``(split, attempt)`` pairs and the running count."""

    latest: dict[int, SplitClaim]
    claimable: list[tuple[int, int]]
    running: int
    states: dict[int, TrialState]


@dataclasses.dataclass(frozen=True)
class SplitStatus:
    """How one split stands.

    Attributes:
        split: Split index.
        state: ``"complete"``, ``"pruned"``, ``"running"``, ``"failed"`` (will be
            retried), ``"given up"`` or ``"missing"`` (never claimed).
        attempts: Attempts so far.
        errors: Attempts that raised in the user's code.
        preemptions: Attempts lost with their worker.
        interruptions: Attempts the user stopped.
        trial_number: The latest attempt's trial number (-1 if none).
        reason: The latest attempt's ``fail_reason`` (empty if none).
    """

    split: int
    state: str
    attempts: int = 0
    errors: int = 0
    preemptions: int = 0
    interruptions: int = 0
    trial_number: int = -1
    reason: str = ""


def budgets_of(study: StudyRuntime) -> Budgets:
    """Return the study's (or this worker's overridden) budgets."""
    return Budgets(study.config.max_retries, study.config.max_preemptions)


def _owner_gone(claim: SplitClaim, host: str) -> bool:
    """True if the claim's worker ran on this host in a process that no longer exists."""
    pid = claim.pid
    if claim.host != host or pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _take_over(study: StudyRuntime, claim: SplitClaim) -> None:
    """Mark the RUNNING trial of a dead local worker as failed (a lost worker)."""
    storage = storage_of(study.study)
    reason = f"{LOST_WORKER}: process {claim.pid} on {claim.host} is gone"
    try:
        retry_transient(storage.set_trial_system_attr, claim.trial_id, FAIL_REASON_KEY, reason)
        retry_transient(storage.set_trial_state_values, claim.trial_id, TrialState.FAIL)
    except RuntimeError:  # another worker finished it first (UpdateFinishedTrialError)
        pass


def _settle(
    first: dict[int, SplitClaim], again: dict[int, SplitClaim]
) -> tuple[dict[int, SplitClaim], frozenset[int]]:
    """Combine the claims read before the states with those read after them.

    A failing worker marks its claim (errored, interrupted) before it sets its trial to
    FAIL, so the flags come from the read after the states: a mark whose FAIL the states
    show is then always seen (else an error would count as a lost worker). A claim that
    changed between the two reads (a trial attached, a new attempt claimed) is
    *unsettled*: the states read in between do not describe it, and a decision taken on
    the first read would be stale (a split whose trial was attached, ran and completed
    meanwhile looked trial-less and was claimed again). Unsettled splits are running on
    this look and decided on the next.

    Returns:
        The latest claims (as read after the states) and the unsettled splits.
    """
    unsettled = {
        split
        for split in first.keys() | again.keys()
        if split not in first
        or split not in again
        or (again[split].attempt, again[split].trial_id)
        != (first[split].attempt, first[split].trial_id)
    }
    return dict(again), frozenset(unsettled)


def work_left(study: StudyRuntime, take_over: bool = True) -> WorkLeft:
    """Return what is left to run of ``study``.

    With ``take_over``, trials of workers that died on this host are marked failed at
    once, and trials whose heartbeat went stale are marked failed by Optuna; both then
    count as claimable (within the preemption budget), not as running. Without it
    (read-only views such as the summary) nothing is written.
    """
    heartbeat_s = study.open_kwargs.get("heartbeat_interval")
    orphan_after = datetime.timedelta(seconds=max(60, 2 * (heartbeat_s or 30)))
    backend = rdb_backend(storage_of(study.study))
    if take_over:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_transient(optuna.storages.fail_stale_trials, study.study)
    latest = retry_transient(study.claims.latest)
    states = {
        c.trial_id: retry_transient(backend.get_trial, c.trial_id).state
        for c in latest.values()
        if c.trial_id is not None
    }
    latest, unsettled = _settle(latest, retry_transient(study.claims.latest))
    for split in unsettled:  # for views (split_statuses); not acted on this look
        trial_id = latest[split].trial_id if split in latest else None
        if trial_id is not None and trial_id not in states:
            states[trial_id] = retry_transient(backend.get_trial, trial_id).state
    host = socket.gethostname()
    gone = set()
    for split, claim in latest.items():
        if split in unsettled or not take_over or not _owner_gone(claim, host):
            continue
        if claim.trial_id is None:
            gone.add(split)
        elif states[claim.trial_id] == TrialState.RUNNING:
            _take_over(study, claim)
            states[claim.trial_id] = retry_transient(backend.get_trial, claim.trial_id).state
    plan = plan_next_claim(
        study.n_splits, latest, states, budgets_of(study), orphan_after,
        gone=frozenset(gone), unsettled=unsettled,
    )  # fmt: skip
    running = sum(
        1
        for split, c in latest.items()
        if split in unsettled
        or (c.trial_id is None and split not in gone)
        or (c.trial_id is not None and states[c.trial_id] == TrialState.RUNNING)
    )
    return WorkLeft(latest, plan, running, states)


def split_statuses(study: StudyRuntime, left: WorkLeft | None = None) -> list[SplitStatus]:
    """Return how each of the K splits stands (one storage read per attempt's trial)."""
    left = work_left(study) if left is None else left
    claimable = {split for split, _ in left.claimable}
    trials = {trial_id_of(t): t for t in study.study.get_trials(deepcopy=False)}
    out = []
    for split in range(study.n_splits):
        claim = left.latest.get(split)
        if claim is None:
            out.append(SplitStatus(split, "missing"))
            continue
        trial = trials.get(claim.trial_id) if claim.trial_id is not None else None
        state = left.states.get(claim.trial_id) if claim.trial_id is not None else None
        if state == TrialState.COMPLETE:
            name = "complete"
        elif state == TrialState.PRUNED:
            name = "pruned"
        elif split in claimable:
            name = "failed"
        elif state == TrialState.RUNNING or claim.trial_id is None:
            name = "running"  # or starting: claimed, trial not created yet
        else:
            name = "given up"
        out.append(
            SplitStatus(
                split,
                name,
                attempts=claim.attempt + 1,
                errors=claim.errors,
                preemptions=claim.preemptions(latest_failed=name in ("failed", "given up")),
                interruptions=claim.interruptions,
                trial_number=trial.number if trial is not None else -1,
                reason=str(trial.system_attrs.get(FAIL_REASON_KEY, "")) if trial else "",
            )
        )
    return out


def given_up_error(
    study: StudyRuntime, statuses: list[SplitStatus], after_run: bool = False
) -> SplitsGivenUpError | None:
    """Return an error naming every given-up split (and why), or None if there is none.

    Args:
        study: The study.
        statuses: How its splits stand (:func:`split_statuses`).
        after_run: At the end of an ``optimize`` call that ran to completion: splits
            still failed then (an error before the first report, which is not retried in
            the same call) are named too.
    """
    budgets = budgets_of(study)
    lines, n_given_up = [], 0
    for s in statuses:
        if s.state == "given up":
            n_given_up += 1
            if s.errors > budgets.max_retries:
                why = f"{s.errors} errors > max_retries={budgets.max_retries}"
            else:
                why = f"{s.preemptions} lost workers > max_preemptions={budgets.max_preemptions}"
        elif s.state == "failed" and after_run:
            why = "not retried in this call; fix it and run optimize again"
        else:
            continue
        lines.append(
            f"split {s.split} (trial {s.trial_number}, attempt {s.attempts - 1}): "
            f"{s.reason or 'no reason recorded'} [{why}]"
        )
    if not lines:
        return None
    return SplitsGivenUpError(
        f"Study {study.study_name!r}: {n_given_up} of {study.n_splits} split(s) given up, "
        f"{len(lines) - n_given_up} left failed:\n  "
        + "\n  ".join(lines)
        + "\nFix the cause, then rerun given-up splits with load_study(..., "
        "max_retries=<higher>).optimize(...) (or max_preemptions=<higher> for lost workers).",
        lines,
    )
