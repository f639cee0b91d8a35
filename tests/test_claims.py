from __future__ import annotations

import datetime
import importlib.util
import multiprocessing
import os
import queue
import random
import sys
import types

import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

_RACE_CHILD_ENV = "OPTUNA_MTO_TEST_RACE_CHILD"
if os.environ.get(_RACE_CHILD_ENV):
    # A spawned racing process re-imports this module. Import _workers/claims.py (the code under
    # test, unchanged) without running the package __init__, which imports torch: that
    # takes seconds per process and would dominate the run time of the race test.
    _spec = importlib.util.find_spec("optuna_mto")
    _package = types.ModuleType("optuna_mto")
    _package.__path__ = list(_spec.submodule_search_locations)
    sys.modules.setdefault("optuna_mto", _package)

from optuna_mto._workers.claims import Budgets, ClaimTable, SplitClaim, plan_next_claim  # noqa: E402

POSTGRES_ENV = "OPTUNA_MTO_TEST_POSTGRES_URL"
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0)
HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)
N_PROCESSES = 8
N_RACE_SPLITS = 4


def _claim(split: int, attempt: int, trial_id: int | None, age=datetime.timedelta(0), errors=None):
    """A claim whose attempts so far all raised in the user's code (unless ``errors``)."""
    errors = attempt + 1 if errors is None else errors
    return SplitClaim(split, attempt, trial_id, NOW - age, errored=errors > 0, errors=errors)


def _plan(
    n_splits, latest, states, max_retries=2, orphan_after=MINUTE, now=NOW, max_preemptions=20
):
    budgets = Budgets(max_retries, max_preemptions)
    return plan_next_claim(n_splits, latest, states, budgets, orphan_after, now=now)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# ----------------------------------------------------------------- plan_next_claim


def test_plan_fresh_splits_in_index_order() -> None:
    assert _plan(4, {}, {}) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert _plan(1, {}, {}) == [(0, 0)]


def test_plan_fresh_first_then_retries_and_exclusions() -> None:
    latest = {
        0: _claim(0, 0, 10),  # FAIL, retries left -> (0, 1)
        2: _claim(2, 0, 11),  # RUNNING -> excluded
        3: _claim(3, 1, 12),  # COMPLETE -> excluded
        4: _claim(4, 2, 13),  # FAIL on the last allowed attempt -> excluded
        6: _claim(6, 1, 14),  # FAIL, one retry left -> (6, 2)
        7: _claim(7, 0, 15),  # WAITING -> excluded
    }
    states = {
        10: TrialState.FAIL,
        11: TrialState.RUNNING,
        12: TrialState.COMPLETE,
        13: TrialState.FAIL,
        14: TrialState.FAIL,
        15: TrialState.WAITING,
    }
    assert _plan(9, latest, states, max_retries=2) == [
        (1, 0),
        (5, 0),
        (8, 0),
        (0, 1),
        (6, 2),
    ]


def test_plan_retries_are_in_split_order() -> None:
    latest = {3: _claim(3, 0, 1), 1: _claim(1, 1, 2), 0: _claim(0, 0, 3)}
    states = dict.fromkeys((1, 2, 3), TrialState.FAIL)
    assert _plan(4, latest, states) == [(2, 0), (0, 1), (1, 2), (3, 1)]


def test_plan_without_retries_never_retries_an_error_but_resumes_a_lost_worker() -> None:
    latest = {0: _claim(0, 0, 1), 1: _claim(1, 0, None, age=HOUR, errors=0)}
    assert _plan(2, latest, {1: TrialState.FAIL}, max_retries=0) == [(1, 1)]
    assert _plan(2, latest, {1: TrialState.FAIL}, max_retries=0, max_preemptions=0) == []


def test_plan_known_dead_owner_is_taken_over_at_once() -> None:
    latest = {0: _claim(0, 0, None, errors=0)}  # claimed just now, no trial yet
    assert _plan(1, latest, {}) == []
    budgets = Budgets(2, 20)
    plan = plan_next_claim(1, latest, {}, budgets, HOUR, now=NOW, gone=frozenset({0}))
    assert plan == [(0, 1)]


def test_plan_everything_done_is_empty() -> None:
    latest = {k: _claim(k, 0, 100 + k) for k in range(3)}
    states = {100: TrialState.COMPLETE, 101: TrialState.RUNNING, 102: TrialState.COMPLETE}
    assert _plan(3, latest, states) == []


def test_plan_claim_with_unknown_trial_state_is_not_retried() -> None:
    assert _plan(1, {0: _claim(0, 0, 42)}, {}) == []


def test_plan_old_orphan_claim_counts_as_failed() -> None:
    latest = {0: _claim(0, 0, None, age=MINUTE + datetime.timedelta(seconds=1))}
    assert _plan(2, latest, {}, orphan_after=MINUTE) == [(1, 0), (0, 1)]


def test_plan_young_orphan_claim_is_still_held() -> None:
    latest = {0: _claim(0, 0, None, age=MINUTE - datetime.timedelta(seconds=1))}
    assert _plan(2, latest, {}, orphan_after=MINUTE) == [(1, 0)]
    # Exactly orphan_after old: not yet abandoned (strictly older is required).
    latest = {0: _claim(0, 0, None, age=MINUTE)}
    assert _plan(2, latest, {}, orphan_after=MINUTE) == [(1, 0)]


def test_plan_orphan_on_last_attempt_is_exhausted() -> None:
    latest = {0: _claim(0, 2, None, age=HOUR, errors=0)}  # three lost workers
    assert _plan(1, latest, {}, max_preemptions=2, orphan_after=MINUTE) == []
    assert _plan(1, latest, {}, max_preemptions=3, orphan_after=MINUTE) == [(0, 3)]
    assert _plan(1, latest, {}, max_retries=0, max_preemptions=3, orphan_after=MINUTE) == [(0, 3)]


def test_plan_orphan_age_is_measured_from_given_now() -> None:
    latest = {0: _claim(0, 0, None)}  # claimed at NOW
    assert _plan(1, latest, {}, orphan_after=HOUR, now=NOW + 2 * HOUR) == [(0, 1)]
    assert _plan(1, latest, {}, orphan_after=HOUR, now=NOW + HOUR / 2) == []


def test_plan_default_now_is_current_utc() -> None:
    fresh = {0: SplitClaim(0, 0, None, _utcnow())}
    stale = {0: SplitClaim(0, 0, None, _utcnow() - 3 * HOUR)}
    assert plan_next_claim(1, fresh, {}, Budgets(2, 20), HOUR) == []
    assert plan_next_claim(1, stale, {}, Budgets(2, 20), HOUR) == [(0, 1)]


# ----------------------------------------------------------------- ClaimTable on SQLite


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}", connect_args={"timeout": 60})
    yield engine
    engine.dispose()


def test_try_claim_is_exclusive(engine) -> None:
    table = ClaimTable(engine, study_id=1)
    assert table.try_claim(0, 0, "a") is True
    assert table.try_claim(0, 0, "b") is False
    assert table.try_claim(0, 1, "b") is True
    assert table.try_claim(1, 0, "b") is True
    # A second table object on the same study sees the same claims.
    assert ClaimTable(engine, study_id=1).try_claim(0, 1, "c") is False


def test_latest_returns_highest_attempt(engine) -> None:
    table = ClaimTable(engine, study_id=1)
    assert table.latest() == {}
    before = _utcnow() - datetime.timedelta(seconds=5)
    for split, attempt in [(0, 0), (0, 2), (0, 1), (2, 0), (2, 1)]:
        assert table.try_claim(split, attempt, "w")
    after = _utcnow() + datetime.timedelta(seconds=5)
    latest = table.latest()
    assert sorted(latest) == [0, 2]
    assert (latest[0].split, latest[0].attempt, latest[0].trial_id) == (0, 2, None)
    assert (latest[2].split, latest[2].attempt, latest[2].trial_id) == (2, 1, None)
    for claim in latest.values():
        assert isinstance(claim, SplitClaim)
        assert claim.claimed_at.tzinfo is None
        assert before <= claim.claimed_at <= after


def test_attach_trial_sets_trial_id_of_that_attempt_only(engine) -> None:
    table = ClaimTable(engine, study_id=1)
    table.try_claim(0, 0, "w")
    table.try_claim(1, 0, "w")
    table.attach_trial(0, 0, 17)
    latest = table.latest()
    assert latest[0].trial_id == 17
    assert latest[1].trial_id is None
    table.try_claim(0, 1, "w")
    table.attach_trial(0, 1, 23)
    assert table.latest()[0].trial_id == 23
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT split, attempt, trial_id FROM mto_split_claims ORDER BY split, attempt")
        ).all()
    assert [tuple(r) for r in rows] == [(0, 0, 17), (0, 1, 23), (1, 0, None)]


def test_study_ids_do_not_interfere(engine) -> None:
    a, b = ClaimTable(engine, study_id=1), ClaimTable(engine, study_id=2)
    assert a.try_claim(0, 0, "w") is True
    assert b.try_claim(0, 0, "w") is True
    assert a.try_claim(1, 0, "w") is True
    b.attach_trial(0, 0, 99)
    assert sorted(a.latest()) == [0, 1]
    assert sorted(b.latest()) == [0]
    assert a.latest()[0].trial_id is None
    assert b.latest()[0].trial_id == 99
    assert ClaimTable(engine, study_id=3).latest() == {}


def test_worker_name_is_truncated_to_column_size(engine) -> None:
    table = ClaimTable(engine, study_id=1)
    assert table.try_claim(0, 0, "x" * 300)
    with engine.connect() as conn:
        worker = conn.execute(sa.text("SELECT worker FROM mto_split_claims")).scalar_one()
    assert worker == "x" * 255


def test_plan_and_table_together_retry_a_failed_split(engine) -> None:
    table = ClaimTable(engine, study_id=5)
    for split, attempt in _plan(2, table.latest(), {}):
        assert table.try_claim(split, attempt, "w")
    table.attach_trial(0, 0, 1)
    table.attach_trial(1, 0, 2)
    states = {1: TrialState.FAIL, 2: TrialState.COMPLETE}
    assert _plan(2, table.latest(), states, now=_utcnow()) == [(0, 1)]
    assert table.try_claim(0, 1, "w")
    # The retry is now the latest claim and has no trial yet, so nothing is left to claim.
    assert _plan(2, table.latest(), states, now=_utcnow()) == []


# ----------------------------------------------------------------- the race between processes


def _race_for_splits(url, kind, study_id, n_splits, barrier, results) -> None:
    """Child process: claim whatever is left until nothing is, report what was won."""
    connect_args = {"timeout": 60} if kind == "sqlite" else {}
    engine = sa.create_engine(url, connect_args=connect_args)
    won = []
    try:
        table = ClaimTable(engine, study_id)
        worker = f"pid-{os.getpid()}"
        barrier.wait(timeout=120)
        while True:
            plan = plan_next_claim(n_splits, table.latest(), {}, Budgets(0, 0), HOUR)
            if not plan:
                break
            for split, attempt in plan:
                if table.try_claim(split, attempt, worker):
                    won.append((split, attempt))
                    break
        results.put(("ok", won))
    except BaseException as err:  # report to the parent instead of dying silently
        results.put(("error", repr(err)))
    finally:
        engine.dispose()


def _race_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV} to run PostgreSQL tests")
    return url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_racing_win_each_split_exactly_once(kind: str, tmp_path, monkeypatch) -> None:
    url = _race_url(kind, tmp_path)
    study_id = random.SystemRandom().randrange(10**6, 2**31 - 1)
    engine = sa.create_engine(url, connect_args={"timeout": 60} if kind == "sqlite" else {})
    try:
        # Create the table before the race: concurrent first-time creation is not what
        # this test is about (see the report on ClaimTable.__init__).
        ClaimTable(engine, study_id)
    except sa.exc.OperationalError as err:
        engine.dispose()
        if kind != "postgres":
            raise
        pytest.fail(f"{POSTGRES_ENV} is set but the PostgreSQL server is unreachable: {err}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_race_for_splits,
            args=(url, kind, study_id, N_RACE_SPLITS, barrier, results),
        )
        for _ in range(N_PROCESSES)
    ]
    monkeypatch.setenv(_RACE_CHILD_ENV, "1")  # inherited by the spawned processes only
    try:
        for p in processes:
            p.start()
        reports = []
        for _ in processes:
            try:
                reports.append(results.get(timeout=120))
            except queue.Empty:
                pytest.fail(f"a racing process reported nothing; got {reports}")
        for p in processes:
            p.join(timeout=60)
            assert p.exitcode == 0
        errors = [detail for status, detail in reports if status != "ok"]
        assert errors == []
        won = [claim for _, claims in reports for claim in claims]
        assert sorted(won) == [(split, 0) for split in range(N_RACE_SPLITS)]
        latest = ClaimTable(engine, study_id).latest()
        assert sorted(latest) == list(range(N_RACE_SPLITS))
        assert all(c.attempt == 0 for c in latest.values())
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join()
        if kind == "postgres":
            with engine.begin() as conn:
                conn.execute(
                    sa.text("DELETE FROM mto_split_claims WHERE study_id = :s"), {"s": study_id}
                )
        engine.dispose()


def test_plan_interrupted_attempts_do_not_use_up_retries() -> None:
    failed = {20: TrialState.FAIL}
    # Third attempt (attempt=2) failed; with max_retries=1 that is exhausted if all raised...
    crashed = SplitClaim(0, 2, 20, NOW, errored=True, errors=3)
    assert _plan(1, {0: crashed}, failed, max_retries=1) == []
    # ...but not when the user interrupted two of the three: one error so far.
    interrupted = SplitClaim(0, 2, 20, NOW, errored=True, interruptions=2, errors=1)
    assert interrupted.preemptions(latest_failed=True) == 0
    assert _plan(1, {0: interrupted}, failed, max_retries=1) == [(0, 3)]
    assert _plan(1, {0: interrupted}, failed, max_retries=0) == []
    # Interruptions use up no preemption either.
    only_interrupted = SplitClaim(0, 2, 20, NOW, interrupted=True, interruptions=3)
    assert _plan(1, {0: only_interrupted}, failed, max_retries=0, max_preemptions=0) == [(0, 3)]


def test_plan_lost_workers_use_the_preemption_budget_not_retries() -> None:
    failed = {20: TrialState.FAIL}
    killed = SplitClaim(0, 4, 20, NOW)  # five attempts, each lost with its worker
    assert killed.preemptions(latest_failed=True) == 5
    assert _plan(1, {0: killed}, failed, max_retries=0, max_preemptions=5) == [(0, 5)]
    assert _plan(1, {0: killed}, failed, max_retries=9, max_preemptions=4) == []
    running = SplitClaim(0, 4, 20, NOW)  # the fifth attempt still runs: four lost so far
    assert running.preemptions(latest_failed=False) == 4


def test_claim_table_records_interruptions(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'i.db'}")
    table = ClaimTable(engine, 7)
    for attempt in range(3):
        assert table.try_claim(0, attempt, "w")
    table.mark_interrupted(0, 0)
    table.mark_interrupted(0, 2)
    table.mark_errored(0, 1)
    latest = table.latest()[0]
    assert (latest.attempt, latest.interrupted, latest.interruptions) == (2, True, 2)
    assert (latest.errored, latest.errors) == (False, 1)
    assert latest.preemptions(latest_failed=True) == 0
    assert table.try_claim(0, 3, "host:123:456")
    assert (table.latest()[0].host, table.latest()[0].pid) == ("host", 123)


def test_claim_table_upgrades_a_table_without_the_interrupted_column(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE mto_split_claims (study_id INTEGER, split INTEGER, attempt INTEGER, "
            "trial_id INTEGER, worker VARCHAR(255) NOT NULL, claimed_at DATETIME NOT NULL, "
            "PRIMARY KEY (study_id, split, attempt))"
        )
        conn.exec_driver_sql(
            "INSERT INTO mto_split_claims VALUES (1, 0, 0, 5, 'w', '2024-05-01 12:00:00')"
        )
    table = ClaimTable(engine, 1)
    assert table.latest()[0].interrupted is False
    assert table.try_claim(0, 1, "w")


def test_a_broken_claims_table_raises_instead_of_looking_like_a_lost_race(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'broken.db'}")
    ClaimTable(engine, 1)
    with engine.begin() as conn:  # a column this version does not fill, without default
        conn.exec_driver_sql("ALTER TABLE mto_split_claims ADD COLUMN extra INTEGER NOT NULL")
    with pytest.raises(sa.exc.IntegrityError):
        ClaimTable(engine, 1).try_claim(0, 0, "w")


def test_claims_inserted_without_the_later_columns_get_their_defaults(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old-worker.db'}")
    table = ClaimTable(engine, 1)
    with engine.begin() as conn:  # what a worker of an older optuna-mto inserts
        conn.exec_driver_sql(
            "INSERT INTO mto_split_claims (study_id, split, attempt, trial_id, worker, "
            "claimed_at) VALUES (1, 0, 0, NULL, 'old', '2024-05-01 12:00:00')"
        )
    claim = table.latest()[0]
    assert (claim.interrupted, claim.errored, claim.errors) == (False, False, 0)
