"""examples/mnist.py, the main job of README's first command: a short run on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist.py"


@pytest.mark.slow
def test_one_epoch_exports_the_chosen_model_and_the_ensemble(tmp_path):
    env = {**os.environ, "OPTUNA_MTO_HOME": str(tmp_path)}
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "1", "--n-splits", "2", "--n-jobs", "2",
           "--storage", f"sqlite:///{tmp_path}/s.db"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    chosen = re.search(r"chosen single model: split \d, .* test accuracy (0\.\d+)", proc.stdout)
    ensemble = re.search(r"ensemble of the 2 models: held-out test accuracy (0\.\d+)", proc.stdout)
    assert chosen and ensemble, proc.stdout
    assert proc.stdout.index("default output, the ensemble") < chosen.start()  # printed first
    assert float(chosen.group(1)) > 0.5 and float(ensemble.group(1)) > 0.5  # real digits learnt
    best = torch.load(tmp_path / "storage" / "mnist_best.pt", weights_only=True)
    members = torch.load(tmp_path / "storage" / "mnist_ensemble.pt", weights_only=True)
    assert all(torch.equal(members[f"members.0.{k}"], v) for k, v in best.items())
    assert any(k.startswith("members.1.") for k in members)
