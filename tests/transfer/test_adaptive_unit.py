"""AdaptiveTransfer (AMTO) on a real SplitHandle: judging explorers, relations, new explorers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _stage_kit import make_env, mlp_with, open_split, same_weights

from optuna_mto._step.report import report_step
from optuna_mto.transfer import AdaptiveTransfer, Explorer, TransferContext


def _bias(model: torch.nn.Module, rows: np.ndarray) -> float:
    return float(model[2].bias[0])


def _context(split, step, fitness, direction="maximize", records=None, seed=0):
    others = {k: r.fitness for k, r in (records or {}).items()}
    rng = np.random.default_rng([seed, split, step])
    return TransferContext(split, step, fitness, direction, others, rng, records=records or {})


def _explorer(value: float, source: int = 2) -> Explorer:
    model = mlp_with(value, seed=9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Explorer(model, opt, None, source, 11, 4, sorted({0, source}))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize(("solver", "explorer"), [(0.2, 0.9), (0.7, 0.1)])
def test_the_explorer_is_judged_and_its_source_relation_moves_toward_the_reward(
    tmp_path, direction, solver, explorer
):
    manager = AdaptiveTransfer()
    env = make_env(tmp_path, n_samples=60, manager=manager, direction=direction, evaluate=_bias)
    split = open_split(env, 0, mlp_with(solver))
    handle = split.handle
    own = {k: v.clone() for k, v in handle.model.state_dict().items()}
    handle.state["relations"] = {"1": 0.3, "2": 0.1}
    handle.companions["explorer"] = candidate = _explorer(explorer)
    taken = {k: v.clone() for k, v in candidate.model.state_dict().items()}

    event = manager.on_report(_context(0, 5, float(torch.tensor(solver)), direction), handle)

    solver_score, explorer_score = float(torch.tensor(solver)), float(torch.tensor(explorer))
    reward = (
        explorer_score - solver_score if direction == "maximize" else solver_score - explorer_score
    )
    wins = reward > 0
    assert manager.relations(handle.state) == pytest.approx({1: 0.3, 2: 0.1 + math.tanh(reward)})
    assert (event.donor, event.donor_trial, event.donor_step, event.operator) == (
        2,
        11,
        4,
        "explorer",
    )
    assert (event.before, event.after, event.accepted) == (solver_score, explorer_score, wins)
    assert same_weights(handle.model.state_dict(), taken if wins else own)
    assert handle.lineage == ([0, 2] if wins else [0])
    assert (handle.tried, handle.accepted) == (1, int(wins))
    assert handle.companions == {}  # judged and dropped; no donor published to start another
    attrs = env.study._storage.get_trial(split.trial._trial_id).user_attrs
    assert attrs["relations:000005"] == {
        "step": 5, "scores": {"1": 0.3, "2": round(0.1 + math.tanh(reward), 6)},
    }  # fmt: skip
    assert attrs["transfer:000005"]["accepted"] == wins


def test_criterion_loss_judges_and_rewards_on_the_validation_loss(tmp_path):
    manager = AdaptiveTransfer(criterion="loss")
    env = make_env(tmp_path, n_samples=60, manager=manager, evaluate=lambda m, r: 0.0,
                   loss=lambda m, r: abs(float(m[2].bias[0])))  # fmt: skip
    handle = open_split(env, 0, mlp_with(0.5)).handle
    handle.companions["explorer"] = _explorer(-0.125, source=1)
    event = manager.on_report(_context(0, 2, 0.0), handle)  # the metric ties: loss decides
    assert (event.before, event.after, event.accepted, event.judged_on) == (
        0.5,
        0.125,
        True,
        "loss",
    )
    assert manager.relations(handle.state) == pytest.approx({1: math.tanh(0.375), 2: 0.0})


def test_blend_keeps_the_average_when_it_beats_both(tmp_path):
    manager = AdaptiveTransfer(blend=True)
    env = make_env(tmp_path, n_samples=60, manager=manager,
                   evaluate=lambda m, r: -abs(float(m[2].bias[0]) - 0.5))  # fmt: skip
    handle = open_split(env, 0, mlp_with(0.0, seed=1)).handle
    own = {k: v.clone() for k, v in handle.model.state_dict().items()}
    handle.companions["explorer"] = candidate = _explorer(1.0)
    other = {k: v.clone() for k, v in candidate.model.state_dict().items()}
    event = manager.on_report(_context(0, 1, -0.5), handle)
    assert (event.operator, event.accepted, event.after) == ("blend", True, 0.0)
    average = {k: (own[k] + other[k]) / 2 for k in own}
    got = handle.model.state_dict()
    assert all(torch.allclose(got[k], average[k]) for k in own)
    assert manager.relations(handle.state)[2] == 0.0  # the explorer itself tied the solver


def test_the_next_explorer_is_a_donor_copy_drawn_by_softmax_of_the_relations(tmp_path):
    manager = AdaptiveTransfer(temperature=0.5)
    env = make_env(tmp_path, n_samples=60, manager=manager, evaluate=_bias)
    donors = {}
    for k in (1, 2):
        model = mlp_with(0.1 * k, seed=k)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model(torch.ones(2, 64)).sum().backward()
        opt.step()  # an optimizer state to hand over
        donor = open_split(env, k, model, opt)
        donor.handle.lineage = [k, 3 - k] if k == 2 else [k]
        report_step(env.shared, donor.handle, donor.ledger, donor.trial, 0.1 * k, 0)
        donors[k] = donor
    records = env.board.read()
    receiver = mlp_with(0.0)
    handle = open_split(env, 0, receiver, torch.optim.Adam(receiver.parameters())).handle
    own = {k: v.clone() for k, v in handle.model.state_dict().items()}

    assert manager.on_report(_context(0, 1, 0.0, records=records), handle) is None
    assert handle.state["relations"] == {"1": 0.0, "2": 0.0}  # every other split, from 0
    explorer = handle.companions["explorer"]
    source = donors[explorer.source]
    assert same_weights(explorer.model.state_dict(), source.handle.model.state_dict())
    assert float(explorer.optimizer.state_dict()["state"][0]["step"]) == 1  # the donor's Adam
    assert handle.optimizer.state_dict()["state"] == {}  # the solver's optimizer untouched
    assert explorer.optimizer is not handle.optimizer
    assert explorer.model is not handle.model and same_weights(handle.model.state_dict(), own)
    assert (explorer.source_trial, explorer.source_step) == (source.trial.number, 0)
    assert explorer.lineage == ([0, 1] if explorer.source == 1 else [0, 1, 2])

    handle.state["relations"] = {"1": 0.5, "2": -0.5}
    picks = []
    for seed in range(300):
        handle.companions.clear()
        manager.on_report(_context(0, 1, 0.0, records=records, seed=seed), handle)
        picks.append(handle.companions["explorer"].source)
    expected = 1 / (1 + math.exp(-(0.5 - -0.5) / 0.5))  # softmax share of split 1: 0.88
    assert abs(picks.count(1) / len(picks) - expected) < 0.06


def test_state_from_checkpoint_reads_both_formats(tmp_path):
    manager = AdaptiveTransfer()
    env = make_env(tmp_path, n_samples=60, manager=manager, evaluate=_bias)
    split = open_split(env, 1)
    split.handle.state["relations"] = {"0": 0.25, "2": -0.5}
    ref = report_step(env.shared, split.handle, split.ledger, split.trial, 0.3, 0).checkpoint
    state = manager.state_from_checkpoint(env.store.load(ref))
    assert state == {"relations": {"0": 0.25, "2": -0.5}}
    assert manager.relations(state) == {0: 0.25, 2: -0.5}
    assert manager.state_from_checkpoint({"relations": {"3": 1.0}}) == {"relations": {"3": 1.0}}
    assert manager.state_from_checkpoint({"model": {}}) == {}
