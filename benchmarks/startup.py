"""Start-up and shut-down cost of ``optimize``, thread and process workers side by side.

    python benchmarks/startup.py [--repeats 3]

A tiny study (K=2 splits of sklearn's breast-cancer data, a small MLP, 2 epochs) so
that training costs almost nothing and what remains is the framework's own cost:

  * start-up: seconds from the ``optimize`` call to the first trial's start (its
    ``datetime_start`` in the storage: a worker has claimed a split);
  * shut-down: seconds from the last trial's completion (``datetime_complete``) to
    the return of ``optimize``;
  * total: the whole ``optimize`` call, and the same training in plain PyTorch.

Each executor runs ``--repeats`` times in one process; the first process run also
pays for the fork server (one import of torch), printed separately ("first").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import optuna
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import optuna_mto
from optuna_mto._data.splits import make_splitter
from optuna_mto.transfer import NoTransfer

_data = load_breast_cancer()
X = torch.tensor((_data.data - _data.data.mean(0)) / _data.data.std(0), dtype=torch.float32)
Y = torch.tensor(_data.target, dtype=torch.long)
EPOCHS = 2


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))


def plain_pytorch() -> float:
    """The same two splits trained back to back in plain PyTorch (no study)."""
    trainer = optuna_mto.SupervisedTrainer(make_model, (X, Y), epochs=EPOCHS)
    splitter = make_splitter("random", 2, 0.2, 0)
    start = time.perf_counter()
    for split in range(2):
        train, valid = splitter.split(len(X), split)
        model = trainer.build_model(split)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for epoch in range(EPOCHS):
            trainer.train_epoch(model, optimizer, train, torch.Generator().manual_seed(epoch))
            trainer.evaluate(model, valid)
    return time.perf_counter() - start


def one_run(home: Path, executor: str) -> tuple[float, float, float]:
    """Return (start-up, shut-down, total) seconds of one fresh study's ``optimize``."""
    study = optuna_mto.create_study(
        storage=f"sqlite:///{home / 'bench.db'}", n_splits=2, transfer=NoTransfer()
    )
    trainer = optuna_mto.SupervisedTrainer(make_model, (X, Y), epochs=EPOCHS)
    called = time.time()
    study.optimize(trainer, n_jobs=2, executor=executor, dashboard=False)
    returned = time.time()
    trials = study.study.get_trials(deepcopy=False)
    first_start = min(t.datetime_start.timestamp() for t in trials)
    last_end = max(t.datetime_complete.timestamp() for t in trials)
    return first_start - called, returned - last_end, returned - called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores; K=2, n_jobs=2, {EPOCHS} epochs, 455 rows")
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("process", "thread"):
            for r in range(args.repeats):
                home = Path(tmp) / f"{executor}-{r}"
                home.mkdir()
                up, down, total = one_run(home, executor)
                label = f"{executor} ({'first' if r == 0 else f'run {r + 1}'})"
                rows.append((label, up, down, total))
    plain = min(plain_pytorch() for _ in range(args.repeats))
    print(f"\n{'executor':<20} {'start-up (s)':>13} {'shut-down (s)':>14} {'optimize (s)':>13}")
    for label, up, down, total in rows:
        print(f"{label:<20} {up:13.2f} {down:14.2f} {total:13.2f}")
    print(f"{'plain PyTorch':<20} {'':>13} {'':>14} {plain:13.2f}")


if __name__ == "__main__":
    main()
