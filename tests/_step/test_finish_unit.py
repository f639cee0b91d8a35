"""finish_split / finish_pruned alone: best weights scored on every split, then kept."""

from __future__ import annotations

import pytest
import torch
from _models import tiny_mlp
from _stage_kit import accuracy_fn, make_env, open_split, same_weights

from optuna_mto._errors import CheckpointError
from optuna_mto._step.finish import finish_pruned, finish_split
from optuna_mto._storage.schema import (
    BEST_KEY,
    CROSS_SCORES_ATTR,
    CROSS_SCORES_KEY,
    LINEAGE_KEY,
    OVERLAP_KEY,
    PRUNED_KEY,
    SELECTION_SCORE_ATTR,
)


def _trained(x, y, rows, epochs: int, seed: int) -> torch.nn.Module:
    """A tiny MLP trained full-batch on ``rows`` (so its scores differ from chance)."""
    torch.manual_seed(seed)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    index = torch.as_tensor(rows, dtype=torch.long)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        opt.step()
    return model


def _accuracy(model, x, y, rows) -> float:
    index = torch.as_tensor(rows, dtype=torch.long)
    with torch.no_grad():
        return (model(x[index]).argmax(1) == y[index]).sum().item() / len(rows)


def _exists(store, ref) -> bool:
    try:
        store.load(ref)
    except CheckpointError:
        return False
    return True


@pytest.mark.parametrize("selection_fraction", [0.0, 0.2])
def test_finish_scores_the_best_weights_on_every_split(tmp_path, digits, selection_fraction):
    x, y = digits
    env = make_env(tmp_path, n_samples=len(y), evaluate=accuracy_fn(x, y),
                   selection_fraction=selection_fraction)  # fmt: skip
    plan = env.shared.plan
    good = _trained(x, y, plan.split(1)[0], epochs=40, seed=1)
    bad = _trained(x, y, plan.split(1)[0], epochs=0, seed=2)
    best_weights = {k: v.clone() for k, v in good.state_dict().items()}
    split = open_split(env, 1, good)
    best = split.ledger.save({"model": good.state_dict()}, 0, 0.9, [1])
    split.handle.model.load_state_dict(bad.state_dict())  # the model moves on, gets worse
    latest = split.ledger.save({"model": bad.state_dict()}, 1, 0.2, [1, 2])
    split.handle.lineage = [1, 2]
    split.handle.companions["explorer"] = object()  # dropped by the manager's on_split_end

    scores, selection = finish_split(env.shared, split.handle, split.ledger, split.trial)

    assert same_weights(split.handle.model.state_dict(), best_weights)  # the best is back
    expected = [_accuracy(good, x, y, plan.split(j)[1]) for j in range(3)]
    assert scores == pytest.approx(expected, abs=1e-6)
    assert scores[1] > 0.5 and split.handle.companions == {}
    stored = env.study._storage.get_trial(split.trial._trial_id)
    assert stored.user_attrs[CROSS_SCORES_ATTR] == [round(s, 6) for s in scores]
    assert stored.system_attrs[CROSS_SCORES_KEY] == scores
    assert stored.system_attrs[LINEAGE_KEY] == [1]  # the best weights' lineage
    train1 = set(plan.split(1)[0].tolist())
    overlap = [
        sum(r in train1 for r in plan.split(j)[1].tolist()) / len(plan.split(j)[1])
        for j in range(3)
    ]
    assert stored.system_attrs[OVERLAP_KEY] == pytest.approx(overlap)
    if selection_fraction:
        assert selection == pytest.approx(_accuracy(good, x, y, plan.selection), abs=1e-6)
        assert stored.user_attrs[SELECTION_SCORE_ATTR] == selection
    else:
        assert selection is None and SELECTION_SCORE_ATTR not in stored.user_attrs

    # The best checkpoint is kept under a new id, published as the finished record.
    kept = split.ledger.best[2]
    assert split.ledger.best[:2] == (0.9, 0) and kept.artifact_id != best.artifact_id
    assert kept.sha256 == best.sha256
    assert stored.system_attrs[BEST_KEY] == {"fitness": 0.9, "step": 0,
                                             "checkpoint": kept.to_dict()}  # fmt: skip
    record = env.board.read()[1]
    assert record.finished and (record.fitness, record.step, record.checkpoint) == (0.9, 0, kept)
    assert [_exists(env.store, r) for r in (kept, best, latest)] == [True, False, False]
    assert same_weights(env.store.load(kept)["model"], best_weights)


def test_finish_pruned_publishes_a_pruned_record_and_removes_every_checkpoint(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    split = open_split(env, 2)
    refs = [split.ledger.save({"model": split.handle.model.state_dict()}, s, f, [2])
            for s, f in enumerate([0.7, 0.3, 0.4])]  # fmt: skip
    split.handle.companions["explorer"] = object()

    finish_pruned(env.shared, split.handle, split.ledger, split.trial, last_step=2)

    stored = env.study._storage.get_trial(split.trial._trial_id)
    assert stored.system_attrs[PRUNED_KEY] == {"step": 2}
    record = env.board.read()[2]
    assert record.pruned and record.finished
    assert (record.step, record.fitness) == (0, 0.7)
    assert not any(_exists(env.store, r) for r in refs)
    assert split.handle.companions == {}
