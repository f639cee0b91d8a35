"""Device assignment, executor choice, thread caps and heartbeats (no training)."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
import torch

from optuna_mto._storage.rdb import open_storage
from optuna_mto._workers.execution import (
    assign_devices,
    cpu_threads_per_worker,
    heartbeat,
    resolve_executor,
)


def _module_level_objective(trial) -> float:
    return 0.0


def test_assign_devices_round_robin_and_validation(monkeypatch):
    assert assign_devices(2, [torch.device("cpu")]) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match=r"devices=\[\]"):
        assign_devices(1, [])
    with pytest.raises(ValueError, match="'tpu:9' is not a torch device"):
        assign_devices(1, ["tpu:9"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert assign_devices(3, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices(2, ["cuda", torch.device("cuda")]) == ["cuda:0", "cuda:0"]
    assert assign_devices(5, None) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    with pytest.raises(ValueError, match=r"'cuda:2', but torch sees 2 CUDA device\(s\)"):
        assign_devices(1, ["cuda:0", "cuda:2"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert assign_devices(2, None) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="'cuda:0', but torch sees no CUDA device"):
        assign_devices(1, ["cuda:0"])


def test_cpu_threads_are_shared_between_workers():
    cores = cpu_threads_per_worker(1)
    assert cores >= 1
    assert cpu_threads_per_worker(cores * 4) == 1
    assert cpu_threads_per_worker(2) == max(1, cores // 2)


def test_resolve_executor_choices_and_errors():
    assert resolve_executor("auto", 1, _module_level_objective) == "inline"
    assert resolve_executor("auto", 2, _module_level_objective) == "process"
    assert resolve_executor("auto", 2, lambda trial: 0.0) == "thread"  # a lambda cannot go
    assert resolve_executor("thread", 1, _module_level_objective) == "thread"
    with pytest.raises(ValueError, match="executor='process' needs an objective"):
        resolve_executor("process", 2, lambda trial: 0.0)
    with pytest.raises(ValueError, match="executor must be one of"):
        resolve_executor("gpu", 2, _module_level_objective)
    with pytest.raises(ValueError, match="n_jobs must be an integer >= 1, but got n_jobs=0"):
        resolve_executor("auto", 0, _module_level_objective)


def test_heartbeat_beats_while_the_block_runs_and_stops_after(tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    backend = storage._backend
    with heartbeat(storage, trial._trial_id):
        time.sleep(3.2)  # longer than the grace period: only fresh beats keep it alive
        during = backend._get_stale_trial_ids(study._study_id)
    assert during == []
    assert not [t for t in threading.enumerate() if t.name.startswith("mto-heartbeat")]
    time.sleep(4.0)  # no more beats: stale, as a killed worker's trial (1 s clock grain)
    assert backend._get_stale_trial_ids(study._study_id) == [trial._trial_id]


def test_auto_runs_threads_when_main_is_not_a_file(monkeypatch):
    # A notebook or REPL: worker processes could not import the objects defined there.
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert resolve_executor("auto", 2, _module_level_objective) == "thread"
    assert resolve_executor("process", 2, _module_level_objective) == "process"
