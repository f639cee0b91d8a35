"""BatchNorm running statistics (and every other buffer) travel whole with a transfer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import optuna_mto
from optuna_mto.transfer import GreedyTransfer

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def bn_cnn() -> nn.Module:
    """A small CNN with two BatchNorm2d layers for 8x8 digits."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


class BatchNormObjective:
    """Split 0 trains well and finishes first; split 1 has lr 0, so it takes split 0's."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.batch = x[:50].clone()  # fixed inputs to compare outputs on
        self.before: dict[str, torch.Tensor] | None = None
        self.after: dict[str, torch.Tensor] | None = None
        self.after_outputs: torch.Tensor | None = None
        self.result: optuna_mto.ReportResult | None = None

    def evaluate(self, model: nn.Module, indices: np.ndarray) -> float:
        rows = torch.as_tensor(indices)
        return float((model(self.x[rows]).argmax(1) == self.y[rows]).float().mean())

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        torch.manual_seed(trial.split)
        model = bn_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.1 if trial.split == 0 else 0.0, momentum=0.9)
        generator = torch.Generator().manual_seed(trial.split)
        rows = torch.as_tensor(trial.train_indices)
        for epoch in range(trial.restore(model, opt), 3):
            model.train()
            for chunk in rows[torch.randperm(len(rows), generator=generator)].split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(self.x[chunk]), self.y[chunk]).backward()
                opt.step()
            if trial.split == 1 and epoch == 1:
                self.before = copy.deepcopy(model.state_dict())
            result = trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
            if trial.split == 1 and epoch == 1:
                self.result = result
                self.after = copy.deepcopy(model.state_dict())
                model.eval()
                with torch.no_grad():
                    self.after_outputs = model(self.batch)


@pytest.mark.parametrize(
    ("artifact_store", "copy_optimizer"), [("file", True), ("database", False)]
)
def test_receiver_equals_donor_exactly_after_an_accepted_transfer(
    tmp_path, study_name, digits, artifact_store, copy_optimizer
):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        n_splits=2,
        seed=0,
        transfer=GreedyTransfer(interval=1, warmup=1, copy_optimizer=copy_optimizer),
        artifact_store=artifact_store,
        heartbeat_interval=None,
    )
    objective = BatchNormObjective(x, y)
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)

    assert objective.result is not None and objective.result.accepted
    event = objective.result.transfer
    donor_record = study.records()[0]
    assert (event.receiver, event.donor, event.step) == (1, 0, 1)
    assert event.donor_step == donor_record.step

    donor_state = study.checkpoint_store.load(donor_record.checkpoint)["model"]
    donor = bn_cnn()
    donor.load_state_dict(donor_state)
    donor.eval()

    # Every tensor of the receiver's state, parameters and buffers, is the donor's.
    assert objective.after.keys() == donor_state.keys()
    buffer_keys = [k for k in donor_state if k.rsplit(".", 1)[-1] in BUFFERS]
    assert len(buffer_keys) == 2 * len(BUFFERS)
    for key, tensor in donor_state.items():
        assert torch.equal(objective.after[key], tensor), key
    # ... and it was not before: split 1's own running statistics differed.
    for key in buffer_keys:
        assert not torch.equal(objective.before[key], donor_state[key]), key

    with torch.no_grad():
        assert torch.equal(objective.after_outputs, donor(objective.batch))
