"""optuna-mto's log lines show without logging set-up, as Optuna's do, in every executor."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import torch
    from torch import nn

    import optuna_mto

    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = (X[:, 0] > 0).long()


    def make_model():
        return nn.Linear(4, 2)


    if __name__ == "__main__":
        trainer = optuna_mto.SupervisedTrainer(make_model, (X, y), epochs=1)
        study = optuna_mto.create_study(n_splits=2, storage="sqlite:///log.db")
        study.optimize(trainer, n_jobs=2, executor="thread")
    """
)


def test_thread_workers_print_the_start_and_finish_lines(tmp_path):
    (tmp_path / "run.py").write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for split in range(2):
        assert re.search(rf"\[I [-\d :,]+\] Trial \d runs split {split} \(attempt 0\) on cpu\.",
                         proc.stderr), proc.stderr  # fmt: skip
        assert re.search(rf"\[I [-\d :,]+\] Trial \d finished split {split} in [\d.]+ s: value",
                         proc.stderr), proc.stderr  # fmt: skip
    # The run ends by naming its default output.
    assert "Its default output is the ensemble of its 2 models" in proc.stderr, proc.stderr
