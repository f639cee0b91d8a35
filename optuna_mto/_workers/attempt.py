"""A split's new attempt: the trial it starts as, and what it keeps of an earlier one.

A retry keeps the hyperparameters the split was given (never sampled again) and
resumes from the split's last record when an earlier, failed attempt left one.
"""

from __future__ import annotations

import datetime
from typing import Any

from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from optuna_mto._step.board import SplitRecord
from optuna_mto._step.hparams import retried_params
from optuna_mto._storage.optuna_internals import storage_of, trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    ATTEMPT_ATTR,
    ATTEMPT_KEY,
    DEVICE_ATTR,
    RETRIED_FROM_KEY,
    SPLIT_ATTR,
    SPLIT_KEY,
    SPLIT_PARAM,
    WORKER_ATTR,
)
from optuna_mto._workers.claims import SplitClaim
from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["trial_template"]


def trial_template(
    runtime: StudyRuntime,
    split: int,
    attempt: int,
    previous: SplitClaim | None,
    *,
    device: str,
    worker: str,
) -> tuple[FrozenTrial, SplitRecord | None]:
    """Return the template of the split's new trial, and the record it resumes from.

    Args:
        runtime: The opened study.
        split: The claimed split.
        attempt: The claimed attempt (0 for the first run of the split).
        previous: The split's claim of its latest earlier attempt, if any.
        device: The device the split runs on.
        worker: The name of the worker that runs it.

    Returns:
        A running trial's template, and the split's last record when an earlier,
        failed attempt left one (None otherwise).
    """
    study = runtime.study
    system_attrs: dict[str, Any] = {SPLIT_KEY: split, ATTEMPT_KEY: attempt}
    resume = None
    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    kept_attrs: dict[str, Any] = {}
    if previous is not None:
        if previous.trial_id is not None:
            system_attrs[RETRIED_FROM_KEY] = previous.trial_id
        # The split keeps the hyperparameters it was given: never sampled again.
        earlier = _last_trial_id(runtime, split, previous)
        if earlier is not None:
            failed = retry_transient(storage_of(study).get_trial, earlier)
            params, dists, kept_attrs = retried_params(failed)
        # The split's last record is from an earlier, failed attempt: resume from it.
        record = retry_transient(runtime.board.read).get(split)
        if record is not None and not record.finished:
            resume = record
    split_distribution = IntDistribution(0, max(runtime.n_splits - 1, 1))
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={SPLIT_PARAM: split, **params},
        distributions={SPLIT_PARAM: split_distribution, **dists},
        user_attrs={
            SPLIT_ATTR: split,
            ATTEMPT_ATTR: attempt,
            DEVICE_ATTR: device,
            WORKER_ATTR: worker,
            **kept_attrs,
        },  # fmt: skip
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=-1,
    )
    return template, resume


def _last_trial_id(runtime: StudyRuntime, split: int, previous: SplitClaim) -> int | None:
    """Return the split's latest trial (an earlier attempt may have died before one)."""
    if previous.trial_id is not None:
        return previous.trial_id
    trials = [
        t
        for t in retry_transient(runtime.study.get_trials, deepcopy=False)
        if t.system_attrs.get(SPLIT_KEY) == split
    ]
    return trial_id_of(max(trials, key=lambda t: t.number)) if trials else None
