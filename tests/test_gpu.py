"""Device placement on CUDA: each split on its device, donor weights onto the receiver's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import tiny_mlp

import optuna_mto
from optuna_mto.transfer import GreedyTransfer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
N_GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _devices(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> set[torch.device]:
    tensors = list(model.state_dict().values())
    tensors += [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return {t.device for t in tensors if t.dim() > 0}  # SGD keeps no scalar step


class DeviceObjective:
    """Split 0 learns; split 1 (lr 0) takes split 0's weights at step 1 when it can.

    Records, after every report, the devices of the model's and optimizer's tensors.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.seen: dict[int, list[tuple[torch.device, set[torch.device], bool]]] = {}

    def evaluate(self, model: torch.nn.Module, indices: np.ndarray) -> float:
        device = next(model.parameters()).device
        rows = torch.as_tensor(indices)
        predicted = model(self.x[rows].to(device)).argmax(1).cpu()
        return float((predicted == self.y[rows]).float().mean())

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        torch.manual_seed(trial.split)
        model = tiny_mlp().to(trial.device)
        lr = 0.5 if trial.split == 0 else 0.0
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        rows = torch.as_tensor(trial.train_indices)
        for epoch in range(trial.restore(model, opt), 3):
            for chunk in rows.split(64):
                x, y = self.x[chunk].to(trial.device), self.y[chunk].to(trial.device)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            result = trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
            entry = (trial.device, _devices(model, opt), result.accepted)
            self.seen.setdefault(trial.split, []).append(entry)


def _study(tmp_path, study_name: str) -> optuna_mto.MTOStudy:
    return optuna_mto.create_study(
        study_name=study_name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        n_splits=2,
        seed=0,
        transfer=GreedyTransfer(interval=1, warmup=1),
        heartbeat_interval=None,
    )


@pytest.mark.parametrize(
    "devices",
    [
        ["cuda:0"],
        pytest.param(
            ["cuda:0", "cuda:1"],
            marks=pytest.mark.skipif(N_GPUS < 2, reason="needs two CUDA devices"),
        ),
    ],
)
def test_each_split_model_lives_on_the_device_it_was_given(tmp_path, study_name, digits, devices):
    x, y = digits
    study = _study(tmp_path, study_name)
    objective = DeviceObjective(x, y)
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate, n_jobs=2,
                   executor="thread", devices=devices)  # fmt: skip

    assert sorted(objective.seen) == [0, 1]
    given = set()
    for entries in objective.seen.values():
        for device, tensor_devices, _ in entries:
            assert device.type == "cuda" and str(device) in devices
            assert tensor_devices == {device}  # transfers included
            given.add(str(device))
    assert given == set(devices)  # two workers, round-robin over the list
    trials = study.study.get_trials()
    assert {t.user_attrs["device"] for t in trials} == set(devices)


def test_donor_weights_from_a_checkpoint_land_on_the_receivers_device(tmp_path, study_name, digits):
    x, y = digits
    donor_device, receiver_device = ("cuda:0", "cuda:1") if N_GPUS >= 2 else ("cpu", "cuda:0")
    study = _study(tmp_path, study_name)
    objective = DeviceObjective(x, y)
    # Split 0 first, alone on the donor's device (timeout=0: one split, then stop) ...
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate, timeout=0,
                   devices=[donor_device])  # fmt: skip
    assert sorted(objective.seen) == [0]
    # ... then split 1 on another device takes split 0's checkpoint at step 1.
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate,
                   devices=[receiver_device])  # fmt: skip

    receiver = torch.device(receiver_device)
    step1 = objective.seen[1][1]
    assert step1[2], "the transfer at step 1 was not accepted"
    for device, tensor_devices, _ in objective.seen[1]:
        assert device == receiver and tensor_devices == {receiver}
    events = [e for e in study.transfers() if e.accepted]
    assert [(e.receiver, e.donor, e.step) for e in events][:1] == [(1, 0, 1)]

    ref = study.records()[0].checkpoint
    state = study.checkpoint_store.load(ref, map_location=receiver)
    assert {t.device for t in state["model"].values()} == {receiver}
    model = study.load_best_model(tiny_mlp().to(receiver), split=1)
    assert {p.device for p in model.parameters()} == {receiver}
