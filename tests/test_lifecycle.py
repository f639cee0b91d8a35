"""What is left of a study, read while other workers write (``_lifecycle.work_left``)."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.optuna_internals import storage_of, study_id_of, trial_id_of
from optuna_mto._storage.rdb import get_engine
from optuna_mto._storage.schema import FAIL_REASON_KEY, claims_table
from optuna_mto._workers.claims import utc_now
from optuna_mto._workers.exclusive import earlier_attempt_lives, give_up_if_superseded
from optuna_mto._workers.lifecycle import split_statuses, work_left
from optuna_mto._workers.worker import Job, Worker

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


# ------------------------------------------------- a split is never claimed twice (issue 21)
def _dead_pid() -> int:
    """The id of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age_claim(rt, split: int, attempt: int) -> None:
    """Make a claim look older than ``orphan_after`` (its worker silent for two hours)."""
    table = claims_table
    stmt = (
        sa.update(table)
        .where(table.c.split == split, table.c.attempt == attempt)
        .where(table.c.study_id == study_id_of(rt.study))
        .values(claimed_at=utc_now() - datetime.timedelta(hours=2))
    )
    with get_engine(storage_of(rt.study)).begin() as conn:
        conn.execute(stmt)


@pytest.mark.parametrize("lost_look", ["worker gone", "orphaned"])
def test_a_split_completed_while_it_was_read_is_not_claimed_again(
    study_name, storage_url, monkeypatch, lost_look
):
    """The 80-worker duplicate: a slow read saw the claim before its trial was attached.

    Between the reader's first claims read and its decision, the claim's worker attached
    its trial, ran the split to COMPLETE and exited. The stale claim (no trial, worker
    gone, or older than ``orphan_after``) must not make the split claimable again.
    """
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=1)
    rt = study._rt
    worker = f"{socket.gethostname()}:{_dead_pid() if lost_look == 'worker gone' else 1}:7"
    assert rt.claims.try_claim(0, 0, worker)
    if lost_look == "orphaned":
        _age_claim(rt, 0, 0)
    before_attach = rt.claims.latest()
    trial = rt.study.ask()
    rt.claims.attach_trial(0, 0, trial_id_of(trial))
    rt.study.tell(trial, 0.9)
    reads = iter([before_attach])
    real_latest = rt.claims.latest
    monkeypatch.setattr(rt.claims, "latest", lambda: next(reads, None) or real_latest())
    left = work_left(rt)
    assert left.claimable == []
    assert [s.state for s in split_statuses(rt, left)] == ["complete"]


def _worker(rt) -> Worker:
    job = Job(objective=lambda trial: None, evaluate=None, n_samples=10, targets=None)
    return Worker(rt, job, "cpu")


def test_a_retry_planned_on_a_stale_look_is_withdrawn(study_name, storage_url, monkeypatch):
    """The retrying side: the slow worker attached and finished after the plan was made."""
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=1)
    rt = study._rt
    assert rt.claims.try_claim(0, 0, f"{socket.gethostname()}:1:7")
    _age_claim(rt, 0, 0)  # its worker could not reach the storage for two hours
    looks = []

    def look(runtime):
        left = work_left(runtime)
        if not looks:  # the slow worker attaches and completes right after this look
            assert left.claimable == [(0, 1)]
            trial = rt.study.ask()
            rt.claims.attach_trial(0, 0, trial_id_of(trial))
            rt.study.tell(trial, 0.9)
        looks.append(left)
        return left

    monkeypatch.setattr("optuna_mto._workers.worker.work_left", look)
    assert _worker(rt)._claim() is None  # claimed attempt 1, saw attempt 0 done, withdrew
    assert rt.claims.latest()[0].attempt == 0
    states = [t.state for t in rt.study.get_trials()]
    assert states == [TrialState.COMPLETE]


def test_a_slow_worker_gives_its_split_up_to_a_newer_attempt(study_name, storage_url):
    """The slow side: a newer attempt was claimed before this worker attached its trial."""
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=1)
    rt = study._rt
    assert rt.claims.try_claim(0, 0, "slow:1:1")
    assert rt.claims.try_claim(0, 1, "other:2:2")  # planned on the orphaned attempt 0
    trial = rt.study.ask()
    rt.claims.attach_trial(0, 0, trial_id_of(trial))
    assert give_up_if_superseded(rt, 0, 0, trial_id_of(trial))
    frozen = rt.study.get_trials()[0]
    assert frozen.state == TrialState.FAIL
    assert frozen.system_attrs[FAIL_REASON_KEY].startswith("superseded: attempt 1 of split 0")
    claims = rt.claims.latest()
    assert claims[0].attempt == 1 and claims[0].interruptions == 1
    # The newer attempt does not withdraw: the earlier trial failed.
    assert not earlier_attempt_lives(rt, 0, 1)


def test_the_latest_attempt_is_not_superseded(study_name, storage_url):
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=1)
    rt = study._rt
    assert rt.claims.try_claim(0, 0, "w:1:1")
    trial = rt.study.ask()
    rt.claims.attach_trial(0, 0, trial_id_of(trial))
    assert not give_up_if_superseded(rt, 0, 0, trial_id_of(trial))
    assert rt.study.get_trials()[0].state == TrialState.RUNNING
    # A retry claimed now would find attempt 0 alive, and withdraw.
    assert rt.claims.try_claim(0, 1, "w:2:2")
    assert earlier_attempt_lives(rt, 0, 1)
    rt.claims.release(0, 1, "w:2:2")
    assert rt.claims.latest()[0].attempt == 0
