"""scripts/gpu_check.sh, the one-command GPU check, dry-run on the CPU so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optuna_mto

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "GPU_WHEELS_DIR": str(tmp_path / "no-wheels"),  # this venv has Optuna already
        "GPU_SITE": str(tmp_path / "site"),  # optuna-mto is installed there, --no-deps
        "CUDA_VISIBLE_DEVICES": "",  # as on a machine without a GPU, also where there is one
        **env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        env=full_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_without_a_gpu_the_check_refuses_instead_of_skipping_everything(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "gpu.json").exists()


@pytest.mark.slow
def test_dry_run_writes_every_log_and_a_complete_benchmark_report(tmp_path):
    proc = _run(tmp_path, GPU_CHECK_ALLOW_CPU="1", BENCH_BUDGET="60", GPU_BENCH_ARGS="--cpu --tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    env = (out / "env.txt").read_text()
    assert f"optuna_mto {optuna_mto.__version__}" in env
    assert "(the machine's own)" in env and str(Path(sys.executable).parents[1]) in env
    assert "skipped" in (out / "tests.log").read_text()  # the GPU tests ran, and skipped
    report = json.loads((out / "gpu.json").read_text())
    assert report["status"] == "ok" and not report["errors"]
    sections = report["sections"]
    assert set(sections) >= {"a_single", "b_shared", "c_plumbing"}
    assert sections["a_single"]["images_per_s"] > 0
    shared = sections["b_shared"]
    assert shared["splits"] == 4 and shared["images"] > 0
    assert shared["transfers_tried"] >= 1
    for store in ("file", "database"):
        assert sections["c_plumbing"][store]["checkpoint_bytes"] > 0
