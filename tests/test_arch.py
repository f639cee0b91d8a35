"""Splits that build different architectures are stopped at their first report."""

from __future__ import annotations

import dataclasses
import re
import types

import pytest
from _models import digits_trainer
from optuna.trial import TrialState
from torch import nn

import optuna_mto
from optuna_mto._step.arch import arch_signature, check_architecture, tensor_shapes
from optuna_mto._step.board import SplitRecord
from optuna_mto._workers.lifecycle import split_statuses
from optuna_mto.checkpoints import CheckpointRef
from optuna_mto.transfer import GreedyTransfer, NoTransfer


class AlternatingMLP:
    """A model factory whose hidden layer is 16 wide on one call and 32 on the next."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> nn.Module:
        self.calls += 1
        hidden = 16 if self.calls % 2 else 32
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_the_signature_is_of_names_and_shapes_only() -> None:
    a, b = AlternatingMLP()(), AlternatingMLP()()  # both 16 wide, different weights
    shapes = tensor_shapes(a.state_dict())
    assert shapes == {"0.weight": (16, 64), "0.bias": (16,), "2.weight": (10, 16), "2.bias": (10,)}
    assert arch_signature(shapes) == arch_signature(tensor_shapes(b.state_dict()))
    assert arch_signature(dict(reversed(shapes.items()))) == arch_signature(shapes)
    wider = {**shapes, "0.weight": (32, 64)}
    assert arch_signature(wider) != arch_signature(shapes)
    assert re.fullmatch(r"[0-9a-f]{16}", arch_signature(shapes))


def test_a_record_without_a_signature_is_unknown_and_not_compared() -> None:
    ref = CheckpointRef("a", "0" * 64, 1)
    old = SplitRecord(0, 1, 0, 3, 0.5, ref, None, 0.5, 3, ref).to_dict()
    del old["arch"]  # as an older optuna-mto wrote it
    record = SplitRecord.from_dict(old)
    assert record.arch is None

    def missing(ref, map_location=None):
        raise optuna_mto.CheckpointError(f"no artifact {ref.artifact_id!r}")

    board = types.SimpleNamespace(read=lambda: {0: record})
    store = types.SimpleNamespace(load=missing)
    shared = types.SimpleNamespace(manager=GreedyTransfer(), evaluate=len, board=board, store=store)
    model = AlternatingMLP()()
    expected = arch_signature(tensor_shapes(model.state_dict()))
    assert check_architecture(shared, 1, model) == expected  # type: ignore[arg-type]
    other = dataclasses.replace(record, arch="0123456789abcdef", started=None)
    board.read = lambda: {0: other}
    with pytest.raises(optuna_mto.ArchitectureMismatchError, match=re.escape(
        f"the first split to publish one: signature {expected} here, 0123456789abcdef there "
        "(no artifact 'a')."
    )):  # fmt: skip
        check_architecture(shared, 1, model)  # type: ignore[arg-type]


def test_a_factory_building_different_architectures_fails_at_the_first_report(
    storage_url, study_name, digits
):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, max_retries=2
    )
    trainer = digits_trainer(x, y, epochs=3, check_first_batch=False)
    trainer.model_fn = AlternatingMLP()  # split 0: 16 wide; split 1: 32 wide
    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(trainer, dashboard=False)
    message = str(info.value)
    assert "0 of 2 split(s) given up, 1 left failed" in message
    assert (
        "split 1 (trial 1, attempt 0): ArchitectureMismatchError: Split 1's model differs from "
        "that of split 0 (trial 0), the first split to publish one: tensor '0.weight' has "
        "shape (32, 64) here but (16, 64) in split 0. Splits exchange weights, so every split "
        "must build the same layers with the same shapes"
    ) in message
    assert "transfer=NoTransfer()" in message
    trials = study.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].intermediate_values == {}  # stopped at its first report, not later
    statuses = split_statuses(study._rt)
    assert [(s.errors, s.preemptions) for s in statuses] == [(0, 0), (1, 0)]
    assert all(r.arch is not None for r in study.records().values() if r.split == 0)


def test_different_architectures_train_independently_without_transfer(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    trainer = digits_trainer(x, y, epochs=1, check_first_batch=False)
    trainer.model_fn = AlternatingMLP()
    study.optimize(trainer, dashboard=False)
    assert study.summary().complete
    assert study.best_state_dict(split=0)["0.weight"].shape == (16, 64)
    assert study.best_state_dict(split=1)["0.weight"].shape == (32, 64)
