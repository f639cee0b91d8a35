"""DDP inside a split: one split per torchrun process group (optuna_mto._workers.distributed).

The multi-process tests launch real ranks with ``python -m torch.distributed.run`` on the
CPU (gloo) against a SQLite study, with the objectives of ``tests/_ddp.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.schema import RESUMED_FROM_ATTR, SPLIT_KEY
from optuna_mto._workers import ddp_group as _ddp_group
from optuna_mto._workers.ddp_group import Group
from optuna_mto._workers.lifecycle import split_statuses
from optuna_mto.transfer import GreedyTransfer

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------- in-process
def test_n_jobs_above_one_or_process_executor_under_torchrun_is_refused(
    tmp_path, monkeypatch, digits
):
    from _models import digits_trainer

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    study = optuna_mto.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", n_splits=2)
    trainer = digits_trainer(*digits, epochs=1)
    with pytest.raises(ValueError, match=r"n_jobs=2\) under torchrun \(WORLD_SIZE=2\)"):
        study.optimize(trainer, n_jobs=2)
    with pytest.raises(ValueError, match="executor='process' under torchrun"):
        study.optimize(trainer, executor="process")
    with pytest.raises(ValueError, match="each rank uses one device"):
        study.optimize(trainer, devices=["cpu", "cpu"])
    assert not study.study.get_trials()  # refused before anything ran


def test_shards_are_disjoint_padded_and_only_inside_a_split():
    rows = torch.randperm(11)
    assert _ddp_group.shard(rows) is rows  # outside a process group: unchanged
    shards = []
    for rank in range(3):
        _ddp_group.enter_split(Group(rank, 3, "cpu", control=None))
        try:
            shards.append(_ddp_group.shard(rows).tolist())
        finally:
            _ddp_group.leave_split()
    assert [len(s) for s in shards] == [4, 4, 4]  # same batches on every rank
    assert sorted(sum(shards, [])) == sorted(rows.tolist() + rows[:1].tolist())
    assert _ddp_group.shard(rows) is rows and not _ddp_group._HOOKS  # hook removed


_CLOSE_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from optuna_mto._workers import distributed
from optuna_mto._workers.ddp_group import Group

def threads():
    return len(os.listdir("/proc/self/task"))

before = threads()
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
with_world = threads()
distributed._GROUP = Group(0, 1, "cpu", dist.new_group(backend="gloo"))
distributed._GROUP.send({"kind": "done", "error": None})
distributed._OWN_WORLD = sys.argv[2] == "ours"
distributed._close_group()
print(json.dumps({"before": before, "with_world": with_world, "after": threads(),
                  "initialized": dist.is_initialized(), "closed": distributed._GROUP is None}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc")
@pytest.mark.parametrize("owner", ["ours", "the user's"])
def test_the_groups_threads_are_joined_before_the_interpreter_exits(tmp_path, owner):
    """Left to Python's teardown, a gloo thread freeing tensors aborts the process."""
    proc = subprocess.run([sys.executable, "-c", _CLOSE_SCRIPT, str(tmp_path / "store"), owner],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["closed"]
    if owner == "ours":  # the process group this module started ends with it
        assert not seen["initialized"] and seen["after"] == seen["before"], seen
    else:  # only the control group goes: the user's process group stays theirs
        assert seen["initialized"] and seen["after"] == seen["with_world"], seen


# ---------------------------------------------------------------------- torchrun
def _torchrun(tmp_path: Path, out: Path, *args: str, **env: str) -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "DDP_TEST_OUT": str(out),
                "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "--monitor-interval", "0.2", *args]  # fmt: skip
    return subprocess.Popen(cmd, env=full_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _worker_args(url: str, name: str, *extra: str) -> list[str]:
    return ["-m", "optuna_mto", "worker", "--storage", url, "--study", name,
            "--objective", "_ddp:trainer", *extra]  # fmt: skip


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _weights(out: Path, rank: int, split: int, step: int) -> dict[str, torch.Tensor]:
    return torch.load(out / f"rank{rank}-split{split}-step{step}.pt")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory):
    """One study of 2 splits, GreedyTransfer, run by `torchrun -m optuna_mto worker`."""
    tmp = tmp_path_factory.mktemp("ddp")
    url, name = f"sqlite:///{tmp / 'study.db'}", "ddp-greedy"
    study = optuna_mto.create_study(
        study_name=name, storage=url, n_splits=2, transfer=GreedyTransfer(),
        artifact_store="database",
    )  # fmt: skip
    started = time.monotonic()
    proc = _torchrun(tmp, tmp / "out", *_worker_args(url, name), DDP_TEST_EPOCHS="3")
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output[-5000:]
    return study, tmp / "out", output, time.monotonic() - started


@pytest.mark.slow
def test_a_study_completes_with_both_ranks_training_disjoint_halves(greedy_run):
    study, out, output, _ = greedy_run
    trials = study.study.get_trials()
    assert sorted(t.system_attrs[SPLIT_KEY] for t in trials) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in trials), output[-3000:]
    assert "rank 1 done" in output
    epochs = [_lines(out / f"rows-rank{r}.jsonl") for r in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 2 * 3  # 2 splits x 3 epochs, on each rank
    for first, second in zip(*epochs, strict=True):
        train = first["train"]
        assert second["train"] == train  # the same split on both ranks
        half = math.ceil(len(train) / 2)
        assert len(first["seen"]) == len(second["seen"]) == half
        assert set(first["seen"]) | set(second["seen"]) == set(train)
        overlap = set(first["seen"]) & set(second["seen"])
        assert len(overlap) == 2 * half - len(train)  # DistributedSampler's padding only
    assert epochs[0][0]["seen"] != epochs[0][1]["seen"]  # a new shard each epoch
    for split in (0, 1):  # the ranks end with the same weights
        assert _same(_weights(out, 0, split, 2), _weights(out, 1, split, 2))


@pytest.mark.slow
def test_an_accepted_transfer_reaches_rank_1(greedy_run):
    study, out, _, _ = greedy_run
    reports = _lines(out / "reports.jsonl")
    accepted = [r for r in reports if r["accepted"]]
    assert accepted, "no transfer was accepted"
    assert {r["rank"] for r in accepted} == {0, 1}  # rank 1 got rank 0's result
    for r in accepted:
        split, step = r["split"], r["step"]
        assert _same(_weights(out, 1, split, step), _weights(out, 0, split, step))
    assert any(e.accepted for e in study.transfers())


@pytest.mark.slow
def test_a_killed_rank_takes_the_group_down_and_the_split_resumes(tmp_path, study_name):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna_mto.create_study(study_name=study_name, storage=url, n_splits=2)
    out = tmp_path / "out"
    first = _torchrun(tmp_path, out, str(TESTS / "_ddp.py"), url, study_name,
                      DDP_TEST_EPOCHS="5", DDP_TEST_EPOCH_S="0.5")  # a user's script  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(r["rank"] == 0 and r["step"] >= 1 for r in _lines(out / "reports.jsonl")):
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no report of step 1"
        time.sleep(0.1)
    split = _lines(out / "reports.jsonl")[0]["split"]
    os.kill(int((out / "pid-rank1").read_text()), signal.SIGKILL)
    output = first.communicate(timeout=120)[0]
    assert first.returncode != 0, output[-3000:]

    second = _torchrun(tmp_path, out, *_worker_args(url, study_name), DDP_TEST_EPOCHS="5")
    output = second.communicate(timeout=240)[0]
    assert second.returncode == 0, output[-5000:]
    trials = [t for t in study.study.get_trials() if t.system_attrs[SPLIT_KEY] == split]
    resumed = max(trials, key=lambda t: t.number)
    assert resumed.state == TrialState.COMPLETE and len(trials) == 2
    assert resumed.user_attrs[RESUMED_FROM_ATTR] >= 1
    again = [r for r in _lines(out / "reports.jsonl") if r["attempt"] == 1]
    assert {r["rank"] for r in again} == {0, 1}
    assert min(r["step"] for r in again) > 1  # both ranks carried on after the checkpoint
    assert study.summary().complete
    status = split_statuses(study._rt)[split]
    assert (status.errors, status.preemptions) == (0, 1)  # a lost worker, not an error
    last = max(r["step"] for r in again)
    assert _same(_weights(out, 0, split, last), _weights(out, 1, split, last))


@pytest.mark.slow
def test_the_ddp_objective_example_runs_under_torchrun(tmp_path):
    example = TESTS.parent / "examples" / "ddp_objective.py"
    proc = _torchrun(tmp_path, tmp_path / "out", str(example))
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output[-5000:]
    assert "Rank 1 of 2 on cpu (gloo backend)" in output
    study = optuna_mto.load_study(study_name="ddp-digits")  # the example's default storage
    assert study.summary().complete and len(study.study.get_trials()) == 2


@pytest.mark.gpu
@pytest.mark.slow
def test_nccl_on_two_gpus_completes_with_identical_ranks(tmp_path, study_name):
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna_mto.create_study(study_name=study_name, storage=url, n_splits=2,
                                    transfer=GreedyTransfer())  # fmt: skip
    out = tmp_path / "out"
    proc = _torchrun(tmp_path, out, *_worker_args(url, study_name, "--device", "auto"))
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-5000:]
    assert "nccl backend" in output
    assert all(t.state == TrialState.COMPLETE for t in study.study.get_trials())
    for split in (0, 1):
        assert _same(_weights(out, 0, split, 2), _weights(out, 1, split, 2))
