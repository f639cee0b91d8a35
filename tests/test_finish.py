"""The end of a split: the value its trial is told must be a finite number."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._step.finish import final_value
from optuna_mto._workers.lifecycle import split_statuses
from optuna_mto.transfer import NoTransfer


def test_final_value_prefers_selection_then_cross_split_mean_then_return() -> None:
    assert final_value(0, [0.5, 0.7], 0.9, 0.1) == (0.9, None)
    assert final_value(0, [0.5, 0.7], None, 0.1) == (pytest.approx(0.6), None)
    assert final_value(0, None, None, 3) == (3.0, None)
    value, reason = final_value(0, None, None, None)
    assert value is None and reason is not None and "returned None" in reason


@pytest.mark.parametrize(
    ("scores", "selection", "returned", "what"),
    [
        ([0.5, math.nan], None, None, "the mean of its cross-split scores [0.5, nan]"),
        ([0.5, 0.7], math.inf, None, "its selection score"),
        (None, None, -math.inf, "the objective's return value"),
    ],
)
def test_a_non_finite_final_value_is_a_reason_not_a_value(scores, selection, returned, what):
    value, reason = final_value(3, scores, selection, returned)
    assert value is None
    assert reason is not None and reason.startswith(
        f"NonFiniteScoreError: Split 3: the final value ({what}) is "
    )
    assert "lower the learning rate" in reason


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_an_objective_returning_a_non_finite_value_uses_up_max_retries(
    storage_url, study_name, bad
):
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, max_retries=2,
        transfer=NoTransfer(),
    )  # fmt: skip
    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(lambda trial: bad, dataset=100, dashboard=False)
    message = str(info.value)
    assert "2 of 2 split(s) given up" in message
    assert f"the final value (the objective's return value) is {bad}, not a finite" in message
    assert "[3 errors > max_retries=2]" in message and "lost workers >" not in message
    statuses = split_statuses(study._rt)
    assert [(s.errors, s.preemptions) for s in statuses] == [(3, 0), (3, 0)]
    trials = study.study.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.system_attrs["fail_reason"].startswith("NonFiniteScoreError") for t in trials)
