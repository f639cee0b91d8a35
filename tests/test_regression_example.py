"""examples/diabetes_regression.py: a regression study end to end, a short run on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diabetes_regression.py"


def test_two_epochs_export_an_ensemble_that_averages_the_outputs(tmp_path):
    env = {**os.environ, "OPTUNA_MTO_HOME": str(tmp_path)}
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "2", "--n-jobs", "1",
           "--storage", f"sqlite:///{tmp_path}/s.db"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    baseline = re.search(r"predicting the mean: held-out test MSE (\d\.\d+)", out)
    chosen = re.search(r"chosen model: split \d, held-out test MSE (\d\.\d+)", out)
    ensemble = re.search(
        r"ensemble of the 4 models \(combine='mean'\): held-out test MSE (\d\.\d+)", out
    )
    assert baseline and chosen and ensemble, out
    # Learnt something: both well below predicting the mean (a constant ensemble is not).
    for match in (chosen, ensemble):
        assert float(match.group(1)) < 0.8 * float(baseline.group(1)), out
    state = torch.load(tmp_path / "storage" / "diabetes_ensemble.pt", weights_only=True)
    assert state["_extra_state"]["n_members"] == 4
    assert state["_extra_state"]["combine"] == "mean"
