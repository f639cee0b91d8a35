"""SplitHandle alone: gate rows, scoring, fitness after a transfer, donors and records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stage_kit import make_env, mlp_with, open_split, same_weights

from optuna_mto._data.splitters import RandomSplitter
from optuna_mto._errors import CheckpointError
from optuna_mto._step.events import TransferEvent
from optuna_mto._step.report import report_step


def test_gate_rows_own_selection_and_unseen(tmp_path):
    env = make_env(tmp_path, n_samples=400, n_splits=4, selection_fraction=0.1,
                   splitter=RandomSplitter(4, validation_fraction=0.3, seed=5))  # fmt: skip
    plan = env.shared.plan
    handle = open_split(env, 0).handle
    handle.lineage = [0, 3]

    assert handle.gate_rows("own", [1]) is None
    assert np.array_equal(handle.gate_rows("selection", [1]), plan.selection)
    assert len(plan.selection) == 40

    trained = set()
    for source in (0, 1, 3):  # the model's lineage and the donor's
        trained |= set(plan.split(source)[0].tolist())
    expected = [r for r in plan.split(0)[1].tolist() if r not in trained]
    unseen = handle.gate_rows("unseen", [1])
    assert unseen.tolist() == expected and 0 < len(expected) < len(plan.split(0)[1])
    alone = handle.gate_rows("unseen", [0])  # a donor adds nothing: only split 3 trained rows
    assert len(alone) > len(unseen)

    no_selection = make_env(tmp_path / "b", n_samples=400, n_splits=4)
    with pytest.raises(ValueError, match="selection_fraction > 0"):
        open_split(no_selection, 0).handle.gate_rows("selection", [1])


def test_evaluate_and_judge_score_in_eval_mode_on_the_own_rows(tmp_path):
    calls = []

    def evaluate(model, rows):
        calls.append((model.training, torch.is_grad_enabled(), rows))
        return float(model[2].bias[0]) + len(rows)

    def loss(model, rows):
        return -float(model[2].bias[0])

    env = make_env(tmp_path, n_samples=90, evaluate=evaluate, loss=loss)
    handle = open_split(env, 2, mlp_with(0.5)).handle
    other = mlp_with(0.25)
    valid = handle.valid_indices
    assert np.array_equal(valid, env.shared.plan.split(2)[1])

    assert handle.evaluate() == 0.5 + len(valid)
    assert handle.evaluate(other, rows=np.arange(7)) == 0.25 + 7
    assert handle.judge(other) == (0.25 + len(valid), "maximize")
    assert handle.judge(other, "loss") == (-0.25, "minimize")
    assert [c[:2] for c in calls] == [(False, False)] * 3  # eval mode, no gradients
    assert handle.model.training and other.training  # the mode is restored

    bare = open_split(make_env(tmp_path / "b", n_samples=90), 0).handle
    with pytest.raises(ValueError, match="No evaluate function"):
        bare.evaluate()
    with pytest.raises(ValueError, match="no evaluate_loss"):
        open_split(make_env(tmp_path / "c", n_samples=90, evaluate=evaluate), 0).handle.judge(
            other, "loss"
        )


def test_fitness_after_a_transfer(tmp_path):
    scored = []

    def evaluate(model, rows):
        scored.append(len(rows))
        return 0.75

    env = make_env(tmp_path, n_samples=90, evaluate=evaluate)
    handle = open_split(env, 0).handle

    def event(accepted, judged_on="own"):
        return TransferEvent(3, 0, 1, 7, 2, "replace", 0.4, 0.6, accepted, judged_on=judged_on)

    assert handle.fitness_after(0.4, None) == 0.4
    assert handle.fitness_after(0.4, event(False)) == 0.4  # nothing kept
    assert handle.fitness_after(0.4, event(True)) == 0.6  # judged on the own rows already
    assert scored == []
    unseen = event(True, "unseen")
    assert handle.fitness_after(0.4, unseen) == 0.75  # rescored on the own validation rows
    assert handle.fitness_after(0.4, unseen) == 0.75 and len(scored) == 1  # cached per event
    assert scored == [len(handle.valid_indices)]
    assert handle.fitness_after(0.4, event(True, "selection")) == 0.75 and len(scored) == 2


def test_load_donor_follows_a_donor_that_moved_on_and_skips_a_pruned_one(tmp_path):
    env = make_env(tmp_path, n_samples=90)
    donor = open_split(env, 1, mlp_with(0.1, seed=1))
    report_step(env.shared, donor.handle, donor.ledger, donor.trial, 0.1, 0)
    old = env.board.read()[1]
    for step in (1, 2):  # two more checkpoints: the one ``old`` names is removed
        with torch.no_grad():
            donor.handle.model[2].bias.fill_(0.1 * (step + 1))
        report_step(env.shared, donor.handle, donor.ledger, donor.trial, 0.1 * (step + 1), step)
    with pytest.raises(CheckpointError):
        env.store.load(old.checkpoint)  # gone: the donor moved on

    receiver = open_split(env, 0).handle
    state = receiver.load_donor(old)
    assert same_weights(state["model"], donor.handle.model.state_dict())  # the newer weights
    assert state["step"] == 2

    donor.ledger.publish(2, 0.3, [1], (0, 0), finished=True, pruned=True)
    donor.ledger.keep_only(None, donor.ledger.best[2])
    assert receiver.load_donor(old) == "donor split 1 was pruned"


def test_record_counts_and_logs_events_and_inherit_merges_lineage(tmp_path):
    env = make_env(tmp_path, n_samples=90)
    split = open_split(env, 0)
    handle = split.handle
    kept = TransferEvent(2, 0, 1, 5, 1, "replace", 0.4, 0.6, True)
    refused = TransferEvent(3, 0, 2, 6, 2, "replace", 0.6, 0.5, False)
    skipped = TransferEvent(4, 0, -1, -1, -1, "", 0.6, float("nan"), False, reason="no donor")
    for event in (kept, refused, skipped):
        assert handle.record(event) is event
    assert (handle.tried, handle.accepted) == (2, 1)  # a skipped step was not tried
    attrs = env.study._storage.get_trial(split.trial._trial_id).user_attrs
    assert attrs["transfer:000002"] == kept.to_dict()
    assert attrs["transfer:000004"]["after"] is None and attrs["transfer:000004"]["reason"]
    handle.inherit([3, 1])
    handle.inherit([1, 0])
    assert handle.lineage == [0, 1, 3]
