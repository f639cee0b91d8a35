"""examples/cifar10_resnet.py: the offline smoke run, and what its workers need."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10_resnet.py"


@pytest.mark.slow
def test_smoke_run_exits_cleanly_and_prints_the_ranked_table(tmp_path):
    env = {**os.environ, "OPTUNA_MTO_HOME": str(tmp_path)}
    cmd = [sys.executable, str(EXAMPLE), "--smoke", "--storage", f"sqlite:///{tmp_path}/s.db"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "Cross-split validation (maximize) of study 'cifar10-smoke-greedy-s0'" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "split"])
    assert [line.split()[0] for line in lines[head + 1 : head + 3]] == ["1", "2"]  # K=2, ranked
    assert "test accuracy" in out
    assert (tmp_path / "storage" / "cifar10_resnet18_best.pt").is_file()


def test_objective_and_evaluate_pickle_without_images(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    import cifar10_resnet as example

    source = example.Cifar10Source("unused", smoke=True)
    objective = example.Cifar10Objective(source, epochs=1, workers=0)
    info = source.prepare()
    assert len(info) == example.SMOKE_SIZE and info.targets.shape == (example.SMOKE_SIZE,)
    for obj in (objective, objective.evaluate, info):
        assert len(pickle.dumps(obj)) < 10_000  # a description, not a dataset
    assert pickle.loads(pickle.dumps(objective)) == objective


def test_missing_data_without_network_exits_with_advice(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    import cifar10_resnet as example
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(SystemExit) as exit_info:
        example.Cifar10Source(str(tmp_path / "nowhere")).prepare()
    message = str(exit_info.value.code)
    assert "--data-dir" in message and "--smoke" in message and "network is unreachable" in message


def test_schedule_state_from_a_donor_further_along_does_not_break_training(
    tmp_path, monkeypatch, study_name
):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    import itertools

    import cifar10_resnet as example

    import optuna_mto
    from optuna_mto.transfer import GreedyTransfer

    source = example.Cifar10Source("unused", smoke=True)
    objective = example.Cifar10Objective(
        source, epochs=3, batch_size=4, workers=0, steps_per_epoch=1
    )
    counter = itertools.count()

    def rising(model, indices) -> float:  # every later score is better: transfers are kept
        return next(counter) / 1000

    study = optuna_mto.create_study(
        study_name=study_name,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        n_splits=2,
        transfer=GreedyTransfer(interval=1, warmup=1, only_better=False),
        heartbeat_interval=None,
    )
    # Split 0 runs first and finishes its one-cycle schedule; split 1 takes its weights,
    # optimizer and schedule state at step 1 and trains one more epoch past that point.
    study.optimize(objective, dataset=source.prepare(), evaluate=rising, devices=["cpu"])
    kept = [e for e in study.transfers() if e.accepted]
    assert [(e.receiver, e.donor, e.step) for e in kept][:1] == [(1, 0, 1)]
    assert study.summary().complete


def _example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    import cifar10_resnet as example

    return example


@pytest.mark.parametrize(
    "arch", ["resnet18", "resnet50", "vgg16_bn", "densenet121", "mobilenet_v2"]
)
def test_every_architecture_takes_32x32_images_and_transfers_whole(monkeypatch, arch):
    import torch

    from optuna_mto._step.state import apply_state, capture_state

    example = _example(monkeypatch)
    assert arch in example.ARCHS
    torch.manual_seed(0)
    donor, receiver = example.make_model(arch), example.make_model(arch)
    images = torch.randn(4, 3, 32, 32)
    donor.train()
    with torch.no_grad():
        donor(images)  # moves the BatchNorm running statistics away from their init
    donor.eval()
    receiver.eval()
    with torch.no_grad():
        expected = donor(images)
        assert expected.shape == (4, 10)
        assert not torch.equal(receiver(images), expected)
        apply_state(capture_state(donor), receiver)
        assert torch.equal(receiver(images), expected)  # parameters and buffers


def test_an_unknown_architecture_is_refused_with_the_choices(monkeypatch):
    example = _example(monkeypatch)
    with pytest.raises(ValueError, match=r"one of \('resnet18'.*but got arch='resnet19'"):
        example.make_model("resnet19")
