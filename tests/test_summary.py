from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from optuna_mto._study.summary import CrossSplitSummary, latest_split_trials

K = 4
# Row i: split i's best model scored on every split's validation set.
CROSS = {
    0: [0.90, 0.80, 0.70, 0.60],  # mean 0.75
    1: [0.50, 0.60, 0.70, 0.80],  # mean 0.65 (from the retry)
    3: [0.95, 0.85, 0.90, 0.90],  # mean 0.90
}
OWN = {0: 0.91, 1: 0.66, 3: 0.97}


def _event(step: int, accepted: bool, after: float | None) -> dict:
    # An attempt that scored no candidate says why (TransferEvent.reason).
    reason = "" if after is not None else "donor checkpoint unreadable"
    return {
        "step": step, "donor": 1, "before": 0.45, "after": after, "accepted": accepted,
        "reason": reason,
    }  # fmt: skip


def _trial(split: int, state: TrialState, *, events=None, value=None, cross="table", own=None):
    system_attrs = {"mto:split": split, "mto:attempt": 0}
    if state == TrialState.COMPLETE:
        if cross is not None:
            system_attrs["mto:cross_scores"] = CROSS[split] if cross == "table" else cross
        system_attrs["mto:best"] = {
            "fitness": OWN[split] if own is None else own,
            "step": 3,
            "checkpoint": {"artifact_id": "a", "sha256": "0" * 64, "nbytes": 1},
        }
    user_attrs = {f"transfer:{i:06d}": e for i, e in enumerate(events or [], start=1)}
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"split": split},
        distributions={"split": IntDistribution(0, K - 1)},
        system_attrs=system_attrs,
        user_attrs=user_attrs,
    )


def _build_study(tmp_path, direction: str) -> optuna.Study:
    study = optuna.create_study(
        study_name=f"summary-{direction}",
        storage=f"sqlite:///{tmp_path}/s.db",
        direction=direction,
    )
    # Trial 0: split 0 completes with one accepted and one rejected transfer, plus a
    # skipped attempt (a reason, no "after": not tried).
    study.add_trial(
        _trial(
            0,
            TrialState.COMPLETE,
            value=0.75,
            events=[_event(1, True, 0.5), _event(2, False, 0.4), _event(3, False, None)],
        )
    )
    # Trial 1: the first attempt of split 1 fails; its events must not count.
    study.add_trial(_trial(1, TrialState.FAIL, events=[_event(1, True, 0.9), _event(2, True, 0.9)]))
    # Trial 2: split 2 only ever failed.
    study.add_trial(_trial(2, TrialState.FAIL, events=[_event(1, True, 0.3)]))
    # Trial 3: split 3 completes without transfer events.
    study.add_trial(_trial(3, TrialState.COMPLETE, value=0.9))
    # Trial 4: the retry of split 1 completes.
    study.add_trial(_trial(1, TrialState.COMPLETE, value=0.65, events=[_event(1, False, 0.2)]))
    # Trial 5: an ordinary optuna trial without a split is ignored.
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=123.0))
    return study


@pytest.fixture(scope="module", params=["maximize", "minimize"])
def summary(request, tmp_path_factory) -> CrossSplitSummary:
    study = _build_study(tmp_path_factory.mktemp(request.param), request.param)
    return CrossSplitSummary.from_study(study, K)


def test_matrix_holds_cross_scores_and_nan_row_for_unfinished(summary) -> None:
    assert summary.n_splits == K
    assert summary.matrix.shape == (K, K)
    for split, row in CROSS.items():
        np.testing.assert_array_equal(summary.matrix[split], row)
    assert np.isnan(summary.matrix[2]).all()


def test_mean_is_row_mean_and_nan_when_unfinished(summary) -> None:
    mean = summary.mean
    assert mean[0] == pytest.approx(0.75)
    assert mean[1] == pytest.approx(0.65)
    assert math.isnan(mean[2])
    assert mean[3] == pytest.approx(0.90)


def test_ranking_follows_direction(summary) -> None:
    if summary.direction == "maximize":
        assert summary.ranking == [3, 0, 1]
        assert summary.best_split == 3
    else:
        assert summary.direction == "minimize"
        assert summary.ranking == [1, 0, 3]
        assert summary.best_split == 1
    assert summary.complete is False


def test_trial_numbers_pick_the_completed_attempt(summary) -> None:
    assert summary.trial_numbers == [0, 4, -1, 3]


def test_own_best_fitness(summary) -> None:
    assert summary.own[0] == 0.91
    assert summary.own[1] == 0.66
    assert math.isnan(summary.own[2])
    assert summary.own[3] == 0.97


def test_transfer_counts(summary) -> None:
    # Split 0: 2 tried (the third event gives a reason: nothing was scored), 1 accepted.
    # Split 1: counted on the completed retry only. Split 2: its latest (failed) attempt.
    assert summary.accepted_transfers == [1, 0, 1, 0]
    assert summary.proposed_transfers == [2, 1, 1, 0]


def test_study_name(summary) -> None:
    assert summary.study_name == f"summary-{summary.direction}"


def test_to_table(summary) -> None:
    table = summary.to_table()
    assert str(summary) == table
    lines = table.splitlines()
    assert lines[0] == (
        f"Cross-split validation ({summary.direction}) of study 'summary-{summary.direction}'"
    )
    assert lines.pop(1) == "INCOMPLETE: split 2 unfinished"  # never reported as done
    assert lines[1].split() == [
        "rank",
        "split",
        "trial",
        "val0",
        "val1",
        "val2",
        "val3",
        "mean",
        "own",
        "xfer",
        "seen",
    ]
    assert lines[-2].startswith("valJ: best model of the split scored on split J's")
    rows = [line.split() for line in lines[2:-2]]
    assert [row[1] for row in rows] == [str(s) for s in summary.ranking] + ["2"]
    by_split = {row[1]: row for row in rows}
    assert by_split["0"][7] == "0.7500"
    assert by_split["1"][7] == "0.6500"
    assert by_split["3"][7] == "0.9000"
    assert by_split["0"][3:7] == ["0.9000", "0.8000", "0.7000", "0.6000"]
    assert by_split["0"][8:] == ["0.9100", "1/2", "-"]
    assert by_split["1"][2] == "4"
    assert by_split["2"] == ["-", "2", "-", "-", "-", "-", "-", "-", "-", "1/1", "-"]
    assert [row[0] for row in rows] == ["1", "2", "3", "-"]


def test_complete_once_every_split_has_scores(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    study.add_trial(_trial(0, TrialState.COMPLETE, value=0.0, cross=[0.5, 0.6, 0.7]))
    study.add_trial(_trial(1, TrialState.COMPLETE, value=0.0, cross=[0.3, 0.4, 0.5]))
    # A split beyond K = 3 is ignored.
    study.add_trial(_trial(3, TrialState.COMPLETE, value=0.0, cross=[0.0, 0.0, 0.0]))
    summary = CrossSplitSummary.from_study(study, 3)
    assert summary.n_splits == 3
    assert summary.complete is False
    assert summary.ranking == [1, 0]  # minimize by default
    study.add_trial(_trial(2, TrialState.COMPLETE, value=0.0, cross=[0.1, 0.2, 0.3], own=0.2))
    summary = CrossSplitSummary.from_study(study, 3)
    assert summary.complete is True
    assert summary.ranking == [2, 1, 0]
    assert summary.best_split == 2
    assert summary.matrix.shape == (3, 3)


def test_completed_trial_without_cross_scores_is_unfinished(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    study.add_trial(_trial(0, TrialState.COMPLETE, value=1.0, cross=[0.8, 0.6]))
    study.add_trial(_trial(1, TrialState.COMPLETE, value=1.0, cross=None, own=0.5))
    summary = CrossSplitSummary.from_study(study, 2)
    assert summary.trial_numbers == [0, 1]
    assert summary.own == [0.91, 0.5]
    assert np.isnan(summary.matrix[1]).all()
    assert summary.ranking == [0]
    assert summary.best_split == 0


def test_empty_study(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    summary = CrossSplitSummary.from_study(study, 2)
    assert summary.ranking == []
    assert summary.best_split is None
    assert summary.complete is False
    assert summary.trial_numbers == [-1, -1]
    lines = summary.to_table().splitlines()
    assert lines[1] == "INCOMPLETE: split 0 unfinished, split 1 unfinished"
    rows = [line.split() for line in lines[3:-2]]
    assert rows == [["-", str(s), "-", "-", "-", "-", "-", "0/0", "-"] for s in range(2)]


def test_latest_split_trials_prefers_complete_then_latest(tmp_path) -> None:
    study = _build_study(tmp_path, "maximize")
    latest = latest_split_trials(study.get_trials())
    assert sorted(latest) == [0, 1, 2, 3]
    assert {s: t.number for s, t in latest.items()} == {0: 0, 1: 4, 2: 2, 3: 3}
    # A later failure does not displace a completed attempt; of failures the latest wins.
    study.add_trial(_trial(1, TrialState.FAIL))  # number 6
    study.add_trial(_trial(2, TrialState.FAIL))  # number 7
    latest = latest_split_trials(study.get_trials())
    assert latest[1].number == 4
    assert latest[2].number == 7


def test_overlap_and_selection_set_rank_the_models(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    rows = {0: ([0.9, 0.9], [0.2, 0.8], 0.70), 1: ([0.8, 0.8], [1.0, 0.1], 0.75)}
    for split, (cross, seen, selection) in rows.items():
        trial = _trial(split, TrialState.COMPLETE, value=selection, cross=cross)
        trial.system_attrs["mto:overlap"] = seen
        trial.system_attrs["mto:selection_score"] = selection
        study.add_trial(trial)
    summary = CrossSplitSummary.from_study(study, 2)
    assert summary.uses_selection
    assert summary.ranking == [1, 0]  # selection score wins over the higher cross-split mean
    assert list(summary.seen_share) == [0.8, 1.0]  # off-diagonal shares only
    table = summary.to_table()
    assert "select" in table.splitlines()[1] and "held-out selection set" in table
    assert table.splitlines()[2].split()[-2:] == ["100%", "0.7500"]
