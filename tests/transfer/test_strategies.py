"""Pure pieces of the adaptive, interpolation and PBT strategies (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_mto.transfer import (
    AdaptiveTransfer,
    InterpolateTransfer,
    PBTTransfer,
    TransferContext,
    explore_value,
    from_params,
    interpolate_state,
    softmax_select,
    update_relation,
)


def test_softmax_select_follows_the_scores():
    rng = np.random.default_rng(0)
    draws = [softmax_select({0: 2.0, 1: 0.0, 2: -2.0}, 1.0, rng) for _ in range(4000)]
    shares = np.bincount(draws, minlength=3) / len(draws)
    expected = np.exp([2.0, 0.0, -2.0]) / np.exp([2.0, 0.0, -2.0]).sum()
    assert np.allclose(shares, expected, atol=0.03)
    hot = [softmax_select({0: 2.0, 1: 0.0}, 100.0, rng) for _ in range(4000)]
    assert abs(np.mean(hot) - 0.5) < 0.05  # a high temperature is nearly uniform
    assert softmax_select({}, 1.0, rng) is None
    first = [softmax_select({3: 0.0, 5: 0.0}, 1.0, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same draw


def test_update_relation_rewards_sources_whose_explorer_wins():
    assert update_relation(0.0, 0.80, 0.90, "maximize") == pytest.approx(math.tanh(0.10))
    assert update_relation(0.5, 0.80, 0.60, "maximize") == pytest.approx(0.5 + math.tanh(-0.2))
    assert update_relation(0.0, 0.50, 0.30, "minimize") == pytest.approx(math.tanh(0.20))
    assert update_relation(0.2, 0.50, math.nan, "minimize") == 0.2


def test_adaptive_choose_donor_uses_relations_over_published_splits():
    manager = AdaptiveTransfer(temperature=0.1)
    rng = np.random.default_rng(1)
    context = TransferContext(0, 3, 0.5, "maximize", {1: 0.1, 2: 0.9}, rng, {1: 1.0, 2: -1.0})
    picks = [manager.choose_donor(context) for _ in range(50)]
    assert picks.count(1) >= 48  # relation, not published fitness, decides
    assert manager.uses_explorer and from_params(manager.get_params()).temperature == 0.1
    with pytest.raises(ValueError, match="temperature=0"):
        AdaptiveTransfer(temperature=0)


def test_interpolate_state_blends_floats_and_keeps_integer_buffers():
    own = {"w": torch.zeros(3), "n": torch.tensor(5)}
    donor = {"w": torch.ones(3) * 4, "n": torch.tensor(9)}
    out = interpolate_state(own, donor, 0.25)
    assert torch.equal(out["w"], torch.ones(3)) and int(out["n"]) == 5
    manager = InterpolateTransfer(alphas=(0.5, 1.0))
    ctx = TransferContext(0, 1, 0.0, "maximize", {}, np.random.default_rng(0))
    own_state = {"model": own, "optimizer": {"state": {}, "param_groups": []}}
    labels = [label for label, _ in manager.candidates(own_state, {"model": donor}, ctx)]
    assert labels == ["interpolate:0.5", "interpolate:1"]
    assert from_params(manager.get_params()).alphas == (0.5, 1.0)
    with pytest.raises(ValueError, match=r"alphas must be numbers in \(0, 1\]"):
        InterpolateTransfer(alphas=(0.0,))


@pytest.mark.parametrize(
    "distribution",
    [
        FloatDistribution(1e-4, 1e-1, log=True),
        FloatDistribution(0.0, 0.5),
        FloatDistribution(0.0, 0.5, step=0.05),
        IntDistribution(1, 9),
    ],
)
def test_explore_value_stays_inside_its_distribution(distribution):
    rng = np.random.default_rng(3)
    value = distribution.low
    seen = set()
    for _ in range(500):
        value = explore_value(value, distribution, rng, (0.8, 1.2, 3.0), 0.3)
        assert distribution.low <= value <= distribution.high
        assert distribution._contains(distribution.to_internal_repr(value))
        seen.add(value)
    assert len(seen) > 3  # it does move


def test_explore_value_categorical_and_unknown():
    rng = np.random.default_rng(0)
    dist = CategoricalDistribution(["sgd", "adam"])
    assert {explore_value("sgd", dist, rng, (1.0,), 0.0) for _ in range(50)} == {"sgd", "adam"}


def test_pbt_explore_records_old_and_new_values_replayably():
    manager = PBTTransfer(hyperparams={"lr": FloatDistribution(1e-3, 1e-1, log=True)})
    state = {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}

    def explore(seed):
        ctx = TransferContext(0, 2, 0.5, "maximize", {}, np.random.default_rng(seed))
        return manager.explore(state, ctx)

    new_state, changes = explore(5)
    old, new = changes["lr"]
    assert old == 0.01 and new == new_state["param_groups"][0]["lr"] and new != 0.01
    assert 1e-3 <= new <= 1e-1
    assert state["param_groups"][0]["lr"] == 0.01  # the input is not modified
    assert explore(5)[1] == changes  # same seed, same schedule
    rebuilt = from_params(manager.get_params())
    assert rebuilt.get_params() == manager.get_params()
    bad = PBTTransfer(hyperparams={"momentum": FloatDistribution(0.1, 0.9)})
    ctx = TransferContext(0, 2, 0.5, "maximize", {}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no hyperparameter 'momentum'"):
        bad.explore(state, ctx)
    # No names: explore every hyperparameter the objective suggested (none here).
    everything = from_params(PBTTransfer().get_params())
    assert everything.explore(state, ctx) == (state, {})
    values, changes = everything.explore_hparams(
        {"lr": 0.01, "act": "relu"},
        {"lr": FloatDistribution(1e-3, 1e-1, log=True),
         "act": CategoricalDistribution(["relu", "tanh"])},
        TransferContext(0, 2, 0.5, "maximize", {}, np.random.default_rng(0), hparams={"lr": 0.01}),
    )  # fmt: skip
    assert set(changes) == {"lr", "act"} and values["lr"] in (0.008, 0.012)


def test_amto_blend_keeps_the_better_of_explorer_and_average_only_when_it_beats_the_solver(
    tmp_path,
):
    from _models import _digits, adam_fast, tiny_mlp

    import optuna_mto

    manager = AdaptiveTransfer(criterion="loss", blend=True)
    assert from_params(manager.get_params()).blend
    assert "blend" not in AdaptiveTransfer().get_params()  # older configs rebuild unchanged
    study = optuna_mto.create_study(
        storage=f"sqlite:///{tmp_path / 'blend.db'}", n_splits=2, transfer=manager
    )
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, _digits(), optimizer_fn=adam_fast, epochs=6, batch_size=64, same_init=True
    )
    study.optimize(trainer, n_jobs=2, executor="thread", dashboard=False)
    events = study.transfers()
    assert events and {e.operator for e in events} <= {"explorer", "blend"}
    for event in events:  # judged on validation loss: kept only if lower than the solver's
        assert event.judged_on == "loss"
        assert event.accepted == (event.after < event.before)
