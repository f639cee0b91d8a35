"""Chaos: random SIGKILLs of worker processes and of whole jobs over a study's life.

A K=4 study of sklearn digits (an MLP, 24 epochs stretched to ~0.4 s each so that kills
land mid-training) runs in 2 worker processes with default settings. While it runs,
this script kills, at random moments, either one random worker process (what the OOM
killer does; the job replaces it) or the whole job (a preempted node; the script starts
the job again), until --kills kills are done, then lets the job finish. Measured per
backend, against an undisturbed run of the same study:

- kills: how many, of which kind;
- re-trained epochs per kill: epochs reported twice (trained again after a kill), over
  the kills, and over the attempts lost (a job kill loses every split it was running;
  goal: at most one report interval, i.e. <= 1 epoch, per lost attempt);
- splits lost: splits not COMPLETE at the end (goal 0);
- duplicate COMPLETE trials per split (goal 0);
- total wall time / undisturbed wall time.

    python benchmarks/chaos.py                       # SQLite, 10 kills
    python benchmarks/chaos.py --postgres postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

import optuna_mto

K, EPOCHS, EPOCH_S = 4, 24, 0.4


class SlowDigits(optuna_mto.SupervisedTrainer):
    """A digits MLP trainer whose epochs take at least ``EPOCH_S`` seconds."""

    def train_epoch(self, model, optimizer, indices, generator) -> float:
        start = time.monotonic()
        loss = super().train_epoch(model, optimizer, indices, generator)
        time.sleep(max(0.0, EPOCH_S - (time.monotonic() - start)))
        return loss


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


def run_job(url: str, name: str) -> None:
    """One job: open (or create) the study and optimize it with 2 worker processes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    trainer = SlowDigits(_mlp, (x, y), epochs=EPOCHS, optimizer_fn=_adam, batch_size=64)
    study = optuna_mto.create_study(
        study_name=name, storage=url, n_splits=K, load_if_exists=True
    )  # default budgets and heartbeats
    try:
        study.optimize(trainer, n_jobs=2, executor="process")
    except KeyboardInterrupt:
        sys.exit(130)
    print("DONE", flush=True)


def _start(url: str, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--job", url, name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet, or the database is busy
        return []


def _running_workers(url: str, name: str, job_pid: int) -> list[int]:
    pids = []
    for t in _trials(url, name):
        if t.state == TrialState.RUNNING and t.intermediate_values:
            pid = int(str(t.user_attrs.get("worker", "x:0:0")).split(":")[1])
            if pid in (0, job_pid):
                continue
            try:
                os.kill(pid, 0)  # a trial of a killed job stays RUNNING until taken over
            except ProcessLookupError:
                continue
            pids.append(pid)
    return pids


def chaos_run(url: str, n_kills: int, rng: random.Random) -> dict:
    """Run a study to the end while killing workers and jobs; return the measurements."""
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    kills = {"worker": 0, "job": 0}
    job = _start(url, name)
    while True:
        if job.poll() is not None:
            if job.returncode == 0:
                break
            job = _start(url, name)  # killed (or failed): start it again
            continue
        if sum(kills.values()) < n_kills:
            time.sleep(rng.uniform(0.5, 3.0))
            if job.poll() is not None:
                continue
            workers = _running_workers(url, name, job.pid)
            if not workers:
                continue  # nothing trains yet: a kill now would test start-up, not training
            if rng.random() < 0.5:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    kills["worker"] += 1
                except ProcessLookupError:
                    pass
            else:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                kills["job"] += 1
        else:
            time.sleep(0.2)
    wall = time.monotonic() - start
    trials = _trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    per_split = {k: sum(1 for t in complete if t.params["split"] == k) for k in range(K)}
    trained = 0
    for t in trials:
        resumed = t.system_attrs.get("mto:resumed_from_step", -1)
        trained += sum(1 for step in t.intermediate_values if step > resumed)
    n = sum(kills.values())
    return {
        "kills": kills,
        "wall_s": round(wall, 1),
        "retrained_epochs": trained - K * EPOCHS,
        "retrained_per_kill": round((trained - K * EPOCHS) / n, 2) if n else 0.0,
        "lost_attempts": sum(1 for t in trials if t.state == TrialState.FAIL),
        "splits_lost": sum(1 for k in range(K) if per_split[k] == 0),
        "duplicate_complete": sum(max(0, c - 1) for c in per_split.values()),
        "trials": len(trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", nargs=2, metavar=("URL", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    parser.add_argument("--out", default="benchmarks/results/chaos.json")
    args = parser.parse_args()
    if args.job:
        run_job(*args.job)
        return
    workdir = Path("storage") / "chaos"
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["OPTUNA_MTO_HOME"] = str(workdir / "home")
    backends = {"sqlite": f"sqlite:///{workdir / 'chaos.db'}"}
    if args.postgres:
        backends["postgresql"] = args.postgres
    results = {}
    for backend, url in backends.items():
        rng = random.Random(args.seed)
        calm = chaos_run(url, 0, rng)
        chaos = chaos_run(url, args.kills, rng)
        chaos["wall_ratio"] = round(chaos["wall_s"] / calm["wall_s"], 2)
        results[backend] = {"undisturbed": calm, "chaos": chaos}
        print(backend, json.dumps(results[backend]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("| backend | kills (worker/job) | attempts lost | re-trained epochs per kill "
          "(per lost attempt) | splits lost | duplicate COMPLETE "
          "| wall time vs undisturbed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for backend, r in results.items():
        c = r["chaos"]
        print(
            f"| {backend} | {sum(c['kills'].values())} ({c['kills']['worker']}/"
            f"{c['kills']['job']}) | {c['lost_attempts']} | {c['retrained_per_kill']} "
            f"({c['retrained_epochs'] / max(1, c['lost_attempts']):.2f}) | {c['splits_lost']} | "
            f"{c['duplicate_complete']} | {c['wall_s']} s / {r['undisturbed']['wall_s']} s "
            f"= {c['wall_ratio']} |"
        )


if __name__ == "__main__":
    main()
