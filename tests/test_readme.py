"""The README's Quickstart, pasted into a file and run as a script, works as promised."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import optuna_mto

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    """The first ```python block under '## Quickstart'."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README's Quickstart has no python block"
    return match.group(1)


@pytest.mark.slow
def test_the_quickstart_runs_as_a_script_in_worker_processes(tmp_path):
    (tmp_path / "quickstart.py").write_text(quickstart_code())
    env = {k: v for k, v in os.environ.items() if k not in ("OPTUNA_MTO_HOME", "OPTUNA_STORAGE")}
    proc = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Cross-split validation (maximize) of study 'quickstart'" in proc.stdout
    for split in range(4):  # each split ran in a worker process and said so
        assert re.search(rf"Trial \d runs split {split} \(attempt 0\) on cpu", proc.stderr)
        assert re.search(rf"Trial \d finished split {split} in", proc.stderr)
        assert re.search(rf"split {split}  step 10/10 .* done", proc.stdout)
    # The exported weights load into the README's model and classify well.
    namespace: dict[str, object] = {"__name__": "quickstart"}
    exec(compile(quickstart_code(), "quickstart.py", "exec"), namespace)  # the guard stays shut
    model: nn.Module = namespace["make_model"]()  # type: ignore[operator]
    storage = tmp_path / "storage"
    model.load_state_dict(torch.load(storage / "quickstart_best.pt", weights_only=True))
    x, y = namespace["X"], namespace["y"]
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())  # type: ignore[operator]
    assert accuracy > 0.9
    ensemble = optuna_mto.Ensemble.load(
        storage / "quickstart_ensemble.pt", namespace["make_model"], n_members=4
    )  # type: ignore[arg-type]
    with torch.no_grad():
        assert float((ensemble.eval()(x).argmax(1) == y).float().mean()) > 0.9
    files = sorted(p.name for p in storage.iterdir() if p.suffix in (".db", ".pt"))
    assert files == ["quickstart.db", "quickstart_best.pt", "quickstart_ensemble.pt"]


def strategy_code() -> str:
    """The python block under README's 'Writing a strategy'."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("#### Writing a strategy") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README's 'Writing a strategy' has no python block"
    return match.group(1)


def test_the_strategy_example_runs_and_keeps_its_turns(tmp_path):
    from _models import _digits, adam_fast, tiny_mlp

    import optuna_mto

    namespace: dict = {}
    exec(compile(strategy_code(), "README.md", "exec"), namespace)  # noqa: S102
    strategy = namespace["RoundRobinAverage"](interval=1)
    study = optuna_mto.create_study(
        storage=f"sqlite:///{tmp_path / 'rr.db'}", n_splits=3, transfer=strategy
    )
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, _digits(), optimizer_fn=adam_fast, epochs=4, batch_size=64, same_init=True
    )
    study.optimize(trainer, n_jobs=3, executor="thread", dashboard=False)
    assert study.summary().complete
    events = study.transfers()
    assert events and {e.operator for e in events} == {"average"}
    for event in events:
        assert event.accepted == (event.after > event.before)
    record = study.records()[0]
    state = study.checkpoint_store.load(record.best_checkpoint, map_location="cpu")
    assert state.get("strategy", {}).get("turn", 0) == record.best_step
