"""Device placement on CUDA: each split on its device, donor weights onto the receiver's."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

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
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def _run_example(tmp_path, script: str, *args: str) -> tuple[str, optuna_mto.MTOStudy]:
    storage = f"sqlite:///{tmp_path / 'example.db'}"
    env = {**os.environ, "OPTUNA_MTO_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(EXAMPLES / script), "--study-name", "gpu", "--storage", storage]
    proc = subprocess.run(
        [*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, optuna_mto.load_study(study_name="gpu", storage=storage)


@pytest.mark.slow
def test_cifar_example_trains_and_transfers_with_mixed_precision_on_the_gpu(tmp_path):
    # FakeData, K=2 worker processes sharing cuda:0: autocast + GradScaler, channels-last,
    # DataLoader pinning, transfers between processes, the chosen model scored on cuda.
    out, study = _run_example(
        tmp_path, "cifar10_resnet.py", "--smoke", "--devices", "cuda:0", "--epochs", "3",
        "--export", str(tmp_path / "best.pt"),
    )  # fmt: skip
    assert "test accuracy" in out and (tmp_path / "best.pt").is_file()
    trials = study.study.get_trials()
    assert {t.user_attrs["device"] for t in trials} == {"cuda:0"}
    assert study.summary().complete
    tried = [e for e in study.transfers() if not e.reason]
    assert tried, "no transfer was tried at steps 1 and 2"
    state = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    floats = [t for t in state.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # AMP keeps fp32 weights
    assert all(bool(torch.isfinite(t).all()) for t in floats)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None
    and importlib.util.find_spec("pytorch_lightning") is None,
    reason="needs lightning (or pytorch-lightning)",
)
def test_lightning_example_puts_each_split_on_a_gpu(tmp_path):
    out, study = _run_example(tmp_path, "lightning_digits.py", "--epochs", "3")
    assert "held-out test accuracy" in out
    trials = study.study.get_trials()
    assert {t.user_attrs["device"] for t in trials} <= {f"cuda:{i}" for i in range(N_GPUS)}
    assert study.summary().complete


class CrashOnceObjective:
    """Draws CUDA random numbers every epoch; split 0's first attempt dies after step 1.

    Records the CUDA RNG state at the step-1 checkpoint and right after a resume.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.at_checkpoint: torch.Tensor | None = None
        self.after_resume: torch.Tensor | None = None
        self.resumed_at: int | None = None

    def evaluate(self, model: torch.nn.Module, indices: np.ndarray) -> float:
        return DeviceObjective.evaluate(self, model, indices)  # type: ignore[arg-type]

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        device = trial.device
        torch.manual_seed(trial.split)
        torch.cuda.manual_seed(1000 + trial.attempt)  # a resume must overwrite this
        model = tiny_mlp().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        start = trial.restore(model, opt)
        if start > 0 and trial.split == 0:
            self.resumed_at = start
            self.after_resume = torch.cuda.get_rng_state(device)
        for epoch in range(start, 4):
            noise = torch.randn(64, device=device)  # consumes the CUDA generator
            with torch.no_grad():
                model[0].bias.add_(1e-6 * noise[: model[0].bias.numel()])
            if trial.split == 0 and trial.attempt == 0 and epoch == 1:
                self.at_checkpoint = torch.cuda.get_rng_state(device)
            trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
            if trial.split == 0 and trial.attempt == 0 and epoch == 1:
                raise RuntimeError("simulated crash")


def test_a_split_that_crashed_on_the_gpu_resumes_there_with_its_cuda_rng_state(
    tmp_path, study_name, digits
):
    x, y = digits
    study = _study(tmp_path, study_name)
    objective = CrashOnceObjective(x, y)
    run = dict(dataset=(x, y), evaluate=objective.evaluate, devices=["cuda:0"])
    url = f"sqlite:///{tmp_path / 'study.db'}"
    no_retry = optuna_mto.load_study(study_name=study_name, storage=url, max_retries=0)
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="simulated crash"):
        no_retry.optimize(objective, **run)
    # The checkpoint (tensors loaded straight onto cuda:0, RNG states included) resumes.
    study.optimize(objective, **run)

    assert objective.resumed_at == 2
    assert objective.at_checkpoint is not None and objective.after_resume is not None
    assert torch.equal(objective.after_resume, objective.at_checkpoint)
    assert study.summary().complete
    retried = [t for t in study.study.get_trials() if t.params["split"] == 0]
    assert retried[-1].system_attrs["mto:resumed_from_step"] == 1
    assert sorted(retried[-1].intermediate_values) == [0, 1, 2, 3]


def test_rng_states_round_trip_through_a_checkpoint_loaded_onto_the_gpu(tmp_path):
    from optuna_mto._step.state import get_rng_state, set_rng_state
    from optuna_mto.checkpoints import AtomicFileSystemArtifactStore, CheckpointStore

    device = torch.device("cuda:0")
    store = CheckpointStore(AtomicFileSystemArtifactStore(tmp_path))
    ref = store.save({"rng": get_rng_state(device)}, name="rng")
    expected = (torch.rand(3), np.random.rand(3), torch.rand(3, device=device).cpu())
    torch.manual_seed(123)
    np.random.seed(123)
    torch.cuda.manual_seed(123)
    state = store.load(ref, map_location=device)
    assert state["rng"]["cuda"].device == device and state["rng"]["numpy"]["keys"].is_cuda
    set_rng_state(state["rng"], device)
    again = (torch.rand(3), np.random.rand(3), torch.rand(3, device=device).cpu())
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
    assert torch.equal(again[2], expected[2])
