"""What is left of a study, read while other workers write (``_lifecycle.work_left``)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._lifecycle import split_statuses, work_left
from optuna_mto._optuna_internals import storage_of, trial_id_of

# The test plays a worker by hand (ask/tell outside optimize), which Optuna warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def _errored_attempt_read_half_way(study_name: str, storage_url: str, monkeypatch):
    """Split 0's attempt 0 raised; the reader's first claims read predates its mark."""
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=1, max_retries=0
    )
    rt = study._rt
    assert rt.claims.try_claim(0, 0, "host:1:worker")
    trial = rt.study.ask()
    rt.claims.attach_trial(0, 0, trial_id_of(trial))
    before_mark = rt.claims.latest()  # what a reader saw just before the worker failed
    # The failing worker's two writes, in its order: mark the claim, then FAIL the trial.
    rt.claims.mark_errored(0, 0)
    storage_of(rt.study).set_trial_state_values(trial_id_of(trial), TrialState.FAIL)
    reads = iter([before_mark])
    real_latest = rt.claims.latest
    monkeypatch.setattr(rt.claims, "latest", lambda: next(reads, None) or real_latest())
    return rt


def test_an_error_seen_half_way_is_not_mistaken_for_a_lost_worker(
    study_name, storage_url, monkeypatch
):
    rt = _errored_attempt_read_half_way(study_name, storage_url, monkeypatch)
    left = work_left(rt, take_over=False)
    # max_retries=0: the split is given up, not run again on the preemption budget.
    assert left.claimable == []
    assert left.latest[0].errors == 1 and left.latest[0].preemptions(latest_failed=True) == 0


def test_the_status_of_a_split_read_half_way_is_given_up(study_name, storage_url, monkeypatch):
    rt = _errored_attempt_read_half_way(study_name, storage_url, monkeypatch)
    [status] = split_statuses(rt, work_left(rt, take_over=False))
    assert status.state == "given up" and status.errors == 1 and status.preemptions == 0
