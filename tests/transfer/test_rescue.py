"""RescueTransfer: healthy splits stay independent, a split clearly behind is rescued."""

from __future__ import annotations

import math

import pytest
import torch
from _models import digits_trainer

import optuna_mto
from optuna_mto.transfer import RescueTransfer, clearly_behind, from_params


def test_clearly_behind_uses_the_noise_of_an_accuracy():
    # 300 rows at ~0.9: one standard error of the difference is ~0.024.
    assert not clearly_behind(0.88, 0.92, 300, "maximize", z=3.0, tolerance=0.1)
    assert clearly_behind(0.80, 0.92, 300, "maximize", z=3.0, tolerance=0.1)
    # The same gap on 30 rows is noise.
    assert not clearly_behind(0.80, 0.92, 30, "maximize", z=3.0, tolerance=0.1)
    # A stalled split at chance is behind whatever the size.
    assert clearly_behind(0.10, 0.90, 30, "maximize", z=3.0, tolerance=0.1)


def test_clearly_behind_for_losses_is_relative_and_respects_direction():
    assert clearly_behind(1.2, 1.0, 100, "minimize", z=3.0, tolerance=0.1)
    assert not clearly_behind(1.05, 1.0, 100, "minimize", z=3.0, tolerance=0.1)
    assert not clearly_behind(0.9, 1.0, 100, "minimize", z=3.0, tolerance=0.1)  # ahead
    assert clearly_behind(3.0, 5.0, 100, "maximize", z=3.0, tolerance=0.1)  # a score > 1


def test_a_diverged_split_is_behind_and_a_diverged_best_is_not_ahead():
    assert clearly_behind(math.nan, 0.5, 100, "maximize", z=3.0, tolerance=0.1)
    assert clearly_behind(math.inf, 0.5, 100, "minimize", z=3.0, tolerance=0.1)
    assert not clearly_behind(0.5, math.nan, 100, "maximize", z=3.0, tolerance=0.1)


def test_rescue_parameters_round_trip_and_are_checked():
    manager = RescueTransfer(interval=2, z=2.0, tolerance=0.2)
    rebuilt = from_params(manager.get_params())
    assert rebuilt.get_params() == manager.get_params() and rebuilt.gate == "unseen"
    with pytest.raises(ValueError, match="z=-1"):
        RescueTransfer(z=-1)
    with pytest.raises(ValueError, match="lr_factor=0"):
        RescueTransfer(lr_factor=0)
    assert RescueTransfer(lr_factor=1.0).explore({"param_groups": [{"lr": 0.1}]}, None) == (
        {"param_groups": [{"lr": 0.1}]},
        {},
    )


def _stalled_split_study(study_name, digits, manager):
    """Split 1 never learns (lr 0); splits 0 and 2 learn. Returns the optimized study."""
    x, y = digits
    trainer = digits_trainer(x, y)
    study = optuna_mto.create_study(study_name=study_name, n_splits=3, transfer=manager, seed=0)

    def objective(trial):
        model = trainer.build_model(trial.split)
        lr = 0.0 if trial.split == 1 else 1e-2
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(6):
            gen = torch.Generator().manual_seed(step)
            trainer.train_epoch(model, opt, trial.train_indices, gen)
            trial.report(trial.evaluate(model), step, model=model, optimizer=opt)

    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    return study


def test_rescue_transfers_only_to_the_stalled_split(study_name, digits):
    """The healthy splits 0 and 2 never take a donor; the stalled split 1 is rescued."""
    study = _stalled_split_study(study_name, digits, RescueTransfer())
    events = study.transfers()
    assert events and {e.receiver for e in events} == {1}
    assert any(e.accepted for e in events)
    # The rescued split trains on at half the donor's learning rate (Adam, lr 1e-2).
    assert all(e.hparams == {"lr": pytest.approx(5e-3)} for e in events if e.accepted)
    scores = study.summary()
    assert min(scores.mean) > 0.5  # the stalled split was rescued


@pytest.mark.parametrize(("min_gate_rows", "judged_on"), [(0, "unseen"), (10**6, "own")])
def test_too_few_unseen_rows_judge_the_donor_on_the_own_validation_rows(
    study_name, digits, min_gate_rows, judged_on
):
    manager = RescueTransfer(min_gate_rows=min_gate_rows)
    events = _stalled_split_study(study_name, digits, manager).transfers()
    assert events and {e.judged_on for e in events} == {judged_on}
    assert any(e.accepted for e in events)


def _context(step: int, fitness: float, others: dict[int, float]):
    import numpy as np

    from optuna_mto.transfer import TransferContext

    return TransferContext(0, step, fitness, "maximize", others, np.random.default_rng(0))


def test_a_split_that_trails_but_learns_is_not_stalled():
    manager, state = RescueTransfer(patience=2), {}
    # Behind the best by far, but gaining a lot at every look: never stalled.
    for step, own in enumerate([0.3, 0.5, 0.7, 0.8], start=1):
        assert not manager._stalled(_context(step, own, {1: 0.95}), state, 300)
    # Then stuck: stalled after two looks without a gain beyond one standard error.
    assert not manager._stalled(_context(5, 0.8, {1: 0.95}), state, 300)
    assert manager._stalled(_context(6, 0.801, {1: 0.95}), state, 300)
