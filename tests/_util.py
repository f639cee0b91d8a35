"""Small helpers shared by test modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_in_subprocess(code: str) -> str:
    """Run ``code`` in a fresh interpreter with random hash seeds; return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "random"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def kill_group_once_splits_run(
    proc: subprocess.Popen, storage: object, study_name: str, n_trials: int, min_steps: int = 3
) -> None:
    """SIGKILL ``proc``'s process group once ``n_trials`` trials have ``min_steps`` values.

    The way a preempted node dies: the whole job at once, mid-training. Fails the test
    if the splits never get that far within 120 s, or the job exits first.
    """
    import os
    import signal
    import time

    import optuna
    import pytest

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                study = optuna.load_study(study_name=study_name, storage=storage)
                trials = study.get_trials(deepcopy=False)
            except KeyError:
                trials = []
            if len(trials) == n_trials and all(
                len(t.intermediate_values) >= min_steps for t in trials
            ):
                return
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        pytest.fail("splits never got going")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
