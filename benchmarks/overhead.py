"""Speed of optuna-mto against plain PyTorch, and of parallel splits, measured side by side.

    python benchmarks/overhead.py [--epochs 6] [--repeats 2]

Prints (all on the MNIST CNN of examples/mnist.py, 3,200 training digits per split):
  * framework overhead: one split through optuna-mto (transfer off, a checkpoint and a
    storage record every epoch) / the same training loop in plain PyTorch (goal <= 1.05);
  * parallel efficiency: K=2 splits in two workers (processes, then threads) / one
    split alone. A worker is given its share of the cores (here: one), so the fair
    baseline is one split on one core (limit 1.0 = perfect overlap; goal <= 1.15);
    the ratio to one split using every core is printed too.
Each figure is the best of --repeats interleaved runs, taken in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mnist import load_mnist, make_cnn, make_optimizer  # noqa: E402

import optuna_mto
from optuna_mto._data.splits import make_splitter  # noqa: E402
from optuna_mto.transfer import NoTransfer  # noqa: E402


def _trainer(epochs: int) -> optuna_mto.SupervisedTrainer:
    (x, y), _ = load_mnist()
    return optuna_mto.SupervisedTrainer(
        make_cnn, (x, y), optimizer_fn=make_optimizer, epochs=epochs, batch_size=64
    )


def plain_pytorch(epochs: int) -> float:
    """The trainer's own loop for split 0, without any study: train + validate per epoch."""
    trainer = _trainer(epochs)
    study_splits = make_splitter("random", 1, 0.2, 0)
    train, valid = study_splits.split(len(trainer.dataset[0]), 0)
    start = time.perf_counter()
    model = trainer.build_model(0)
    optimizer = make_optimizer(model.parameters())
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch)
        trainer.train_epoch(model, optimizer, train, generator)
        trainer.evaluate(model, valid)
    return time.perf_counter() - start


def through_study(epochs: int, n_splits: int, n_jobs: int, home: Path, executor: str) -> float:
    """Wall time of ``optimize`` for a fresh study (transfer off, no dashboard)."""
    os.environ["OPTUNA_MTO_HOME"] = str(home)
    study = optuna_mto.create_study(
        storage=f"sqlite:///{home / 'bench.db'}",
        n_splits=n_splits,
        transfer=NoTransfer(),
        heartbeat_interval=None,
    )
    trainer = _trainer(epochs)
    start = time.perf_counter()
    study.optimize(trainer, n_jobs=n_jobs, executor=executor, dashboard=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores; {args.epochs} epochs per split")
    runs: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory() as tmp:
        through_study(1, 2, 2, Path(tmp) / "warm", "process")  # start the fork server
        for r in range(args.repeats):  # interleaved, so drifts hit every measure alike
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                record(f"plain-{threads}", plain_pytorch(args.epochs))
                home = Path(tmp) / f"one{threads}-{r}"
                record(f"mto-{threads}", through_study(args.epochs, 1, 1, home, "auto"))
            torch.set_num_threads(cores)
            for executor in ("process", "thread"):
                home = Path(tmp) / f"pair-{executor}-{r}"
                record(f"pair-{executor}", through_study(args.epochs, 2, 2, home, executor))
    t = {name: min(values) for name, values in runs.items()}
    rows = []
    for threads in sorted({1, cores}):
        rows.append((f"overhead ({threads} thread): optuna-mto / plain PyTorch",
                     t[f"mto-{threads}"], t[f"plain-{threads}"]))  # fmt: skip
    for executor in ("process", "thread"):
        rows.append((f"K=2, 2 {executor} workers / 1 split on 1 core",
                     t[f"pair-{executor}"], t["mto-1"]))  # fmt: skip
        rows.append((f"K=2, 2 {executor} workers / 1 split on {cores} cores",
                     t[f"pair-{executor}"], t[f"mto-{cores}"]))  # fmt: skip
    print(f"\n{'measure':<56} {'a (s)':>7} {'b (s)':>7} {'a/b':>6}")
    for name, a, b in rows:
        print(f"{name:<56} {a:7.2f} {b:7.2f} {a / b:6.3f}")
    per_report = (t["mto-1"] - t["plain-1"]) / args.epochs * 1000
    print(
        f"framework cost per report step (1 thread): {per_report:.0f} ms "
        "(intermediate value, checkpoint, record; one-off: trial and cross-split scoring)"
    )
    print(f"(best of {args.repeats} interleaved runs)")


if __name__ == "__main__":
    main()
