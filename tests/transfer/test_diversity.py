"""Diversity-preserving exploitation (truncation, margin, leakage-aware gate) and AMTO's
loss criterion: pure rules first, then small real studies on digits."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from _models import digits_trainer
from optuna.distributions import FloatDistribution

import optuna_mto
from optuna_mto.transfer import (
    AdaptiveTransfer,
    GreedyTransfer,
    PBTTransfer,
    TransferContext,
    from_params,
    is_better_by,
    truncation_donors,
)


def test_truncation_lets_only_the_bottom_quantile_copy_from_the_top():
    fitness = {1: 0.9, 2: 0.7, 3: 0.8}
    assert truncation_donors(fitness, 0, 0.5, 0.25, "maximize") == [1]
    assert truncation_donors(fitness, 0, 0.75, 0.25, "maximize") == []  # not the worst
    assert truncation_donors(fitness, 0, 0.5, 0.5, "maximize") == [1, 3]
    # a diverged split (NaN) ranks last, whatever the direction
    assert truncation_donors(fitness, 0, math.nan, 0.25, "maximize") == [1]
    assert truncation_donors({1: 0.2, 2: 0.4}, 0, math.nan, 0.34, "minimize") == [1]
    assert truncation_donors({}, 0, 0.5, 0.25, "maximize") == []  # alone: nobody to copy


def test_margin_demands_a_clear_improvement():
    assert is_better_by(0.82, 0.80, 0.01, "maximize")
    assert not is_better_by(0.805, 0.80, 0.01, "maximize")
    assert is_better_by(0.30, 0.35, 0.01, "minimize")
    assert not is_better_by(0.345, 0.35, 0.01, "minimize")
    assert is_better_by(0.1, math.nan, 0.5, "maximize")  # anything beats a diverged model
    assert not is_better_by(math.nan, 0.1, 0.0, "maximize")
    assert GreedyTransfer(margin=0.01).accept(0.80, 0.815, "maximize")
    assert not GreedyTransfer(margin=0.01).accept(0.80, 0.805, "maximize")


def test_greedy_with_truncation_chooses_only_from_the_top():
    rng = np.random.default_rng(0)
    manager = GreedyTransfer(truncation=0.25, donor="uniform")
    others = {1: 0.9, 2: 0.7, 3: 0.8}
    worst = TransferContext(0, 3, 0.5, "maximize", others, rng)
    assert {manager.choose_donor(worst) for _ in range(20)} == {1}
    middle = TransferContext(0, 3, 0.75, "maximize", others, rng)
    assert manager.choose_donor(middle) is None


def test_new_options_round_trip_and_old_params_are_unchanged():
    assert "truncation" not in GreedyTransfer().get_params()  # stored configs stay the same
    assert "criterion" not in AdaptiveTransfer().get_params()
    for manager in (
        GreedyTransfer(truncation=0.25, margin=0.01, gate="unseen"),
        AdaptiveTransfer(criterion="loss"),
        PBTTransfer(
            hyperparams={"lr": FloatDistribution(1e-3, 1.0)}, truncation=0.5, gate="selection"
        ),  # fmt: skip
    ):
        assert from_params(manager.get_params()).get_params() == manager.get_params()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"truncation": 0.7}, "truncation must be .* but got truncation=0.7"),
        ({"truncation": 0}, "truncation must be"),
        ({"margin": -0.1}, "margin must be .* but got margin=-0.1"),
        ({"gate": "test"}, "gate must be one of .* but got gate='test'"),
    ],
)
def test_greedy_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GreedyTransfer(**kwargs)


def test_adaptive_rejects_unknown_criterion():
    with pytest.raises(ValueError, match="criterion must be one of .* criterion='accuracy'"):
        AdaptiveTransfer(criterion="accuracy")


class _Recorder:
    """Wraps a trainer: keeps a copy of each split's model as it was at every report."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.models = {}
        self.dataset, self.evaluate, self.model_fn = trainer.dataset, trainer.evaluate, None
        self.evaluate_loss = trainer.evaluate_loss

    def __call__(self, trial):
        report = trial.report

        def recording(value, step, **kwargs):
            self.models[(trial.split, step)] = copy.deepcopy(kwargs["model"])
            return report(value, step, **kwargs)

        trial.report = recording
        self.trainer(trial)


def _study(name, manager, **kwargs):
    return optuna_mto.create_study(
        study_name=name, n_splits=2, seed=3, transfer=manager, heartbeat_interval=None, **kwargs
    )


def test_unseen_gate_judges_on_validation_rows_the_donor_never_trained_on(digits, study_name):
    x, y = digits
    recorder = _Recorder(digits_trainer(x, y, epochs=2))
    manager = GreedyTransfer(gate="unseen", only_better=False)
    study = _study(study_name, manager)
    study.optimize(
        recorder, dataset=(x, y), evaluate=recorder.evaluate, executor="thread", dashboard=False
    )  # inline: 0 then 1
    events = [e for e in study.transfers() if e.receiver == 1]
    assert len(events) == 1 and events[0].judged_on == "unseen" and not events[0].reason
    (train0, _), (_, valid1) = study.splits(len(x))
    rows = np.setdiff1d(valid1, train0)
    assert 0 < len(rows) < len(valid1) / 2  # the donor trained on most of split 1's rows
    before = recorder.trainer.evaluate(recorder.models[(1, 1)], rows)
    assert events[0].before == pytest.approx(before)


def test_selection_gate_judges_on_the_selection_rows(digits, study_name):
    x, y = digits
    recorder = _Recorder(digits_trainer(x, y, epochs=2))
    study = _study(study_name, GreedyTransfer(gate="selection", only_better=False),
                   selection_fraction=0.1)  # fmt: skip
    study.optimize(
        recorder, dataset=(x, y), evaluate=recorder.evaluate, executor="thread", dashboard=False
    )
    (event,) = [e for e in study.transfers() if e.receiver == 1]
    rows = study.selection_indices(len(x))
    assert event.judged_on == "selection"
    assert event.before == pytest.approx(recorder.trainer.evaluate(recorder.models[(1, 1)], rows))


def test_amto_loss_criterion_judges_explorers_and_updates_relations_on_loss(digits, study_name):
    x, y = digits
    trainer = digits_trainer(x, y, epochs=4)
    study = _study(study_name, AdaptiveTransfer(criterion="loss"))
    study.optimize(trainer, n_jobs=2, executor="thread", dashboard=False)
    events = [e for e in study.transfers() if e.operator == "explorer"]
    assert events and all(e.judged_on == "loss" for e in events)
    trials = {t.params["split"]: t for t in study.study.get_trials()}
    for receiver in (0, 1):
        mine = [e for e in events if e.receiver == receiver]
        expected = sum(math.tanh(e.before - e.after) for e in mine)  # loss: lower is better
        last = max(k for k in trials[receiver].user_attrs if k.startswith("relations:"))
        scores = trials[receiver].user_attrs[last]["scores"]
        assert scores[str(1 - receiver)] == pytest.approx(expected, abs=1e-5)
        for e in mine:  # kept exactly when the explorer's loss is lower
            assert e.accepted == (e.after < e.before)
        assert all(e.before > 0 for e in mine)  # cross-entropy losses, not accuracies


def test_amto_loss_criterion_needs_a_loss_function(digits, study_name):
    x, y = digits
    trainer = digits_trainer(x, y, epochs=3)

    def objective(trial):  # a plain function: no evaluate_loss
        trainer(trial)

    _study(study_name, AdaptiveTransfer(criterion="loss"))
    study = optuna_mto.load_study(study_name=study_name, max_retries=0)  # no retry past it
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="criterion='loss'.* no evaluate_loss"):
        study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)


def test_selection_gate_needs_a_selection_set(digits, study_name):
    x, y = digits
    trainer = digits_trainer(x, y, epochs=2)
    study = _study(study_name, GreedyTransfer(gate="selection", only_better=False))
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="gate='selection'.*selection_fraction"):
        study.optimize(trainer, executor="thread", dashboard=False)
