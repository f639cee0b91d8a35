"""Speed of optuna-mto against plain PyTorch, and of parallel splits, measured side by side.

    python benchmarks/overhead.py [--epochs 6] [--repeats 2]

Prints (all on the MNIST CNN of examples/mnist.py, 3,200 training digits per split):
  * framework overhead: one split through optuna-mto (transfer off, a checkpoint and a
    storage record every epoch) / the same training loop in plain PyTorch (goal <= 1.05);
  * parallel efficiency: K=2 splits in two worker processes / one split alone
    (limit 1.0 is perfect overlap; goal <= 1.15 on a 2-core machine).
Each figure is the best of --repeats runs, taken in one process, one after the other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mnist import load_mnist, make_cnn, make_optimizer  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto.transfer import NoTransfer  # noqa: E402


def _trainer(epochs: int) -> optuna_mto.SupervisedTrainer:
    (x, y), _ = load_mnist()
    return optuna_mto.SupervisedTrainer(
        make_cnn, (x, y), optimizer_fn=make_optimizer, epochs=epochs, batch_size=64
    )


def plain_pytorch(epochs: int) -> float:
    """The trainer's own loop for split 0, without any study: train + validate per epoch."""
    trainer = _trainer(epochs)
    study_splits = optuna_mto.make_splitter("random", 1, 0.2, 0)
    train, valid = study_splits.split(len(trainer.dataset[0]), 0)
    start = time.perf_counter()
    model = trainer.build_model(0)
    optimizer = make_optimizer(model.parameters())
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch)
        trainer.train_epoch(model, optimizer, train, generator)
        trainer.evaluate(model, valid)
    return time.perf_counter() - start


def through_study(epochs: int, n_splits: int, n_jobs: int, home: Path) -> float:
    """Wall time of ``optimize`` for a fresh study (transfer off)."""
    os.environ["OPTUNA_MTO_HOME"] = str(home)
    study = optuna_mto.create_study(
        storage=f"sqlite:///{home / 'bench.db'}",
        n_splits=n_splits,
        transfer=NoTransfer(),
        heartbeat_interval=None,
    )
    trainer = _trainer(epochs)
    start = time.perf_counter()
    study.optimize(trainer, n_jobs=n_jobs, executor="process" if n_jobs > 1 else "auto")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores, {torch.get_num_threads()} threads")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            plain = min(plain_pytorch(args.epochs) for _ in range(args.repeats))
            mto = min(
                through_study(args.epochs, 1, 1, Path(tmp) / f"one{threads}-{i}")
                for i in range(args.repeats)
            )
            rows.append((f"overhead, {threads} thread(s): optuna-mto / plain", mto, plain))
        torch.set_num_threads(cores)
        alone = min(
            through_study(args.epochs, 1, 1, Path(tmp) / f"alone-{i}") for i in range(args.repeats)
        )
        pair = min(
            through_study(args.epochs, 2, 2, Path(tmp) / f"pair-{i}") for i in range(args.repeats)
        )
        rows.append(("parallel: K=2 in 2 processes / 1 split alone", pair, alone))

    print(f"\n{'measure':<52} {'a (s)':>8} {'b (s)':>8} {'a/b':>6}")
    for name, a, b in rows:
        print(f"{name:<52} {a:8.2f} {b:8.2f} {a / b:6.3f}")
    print(f"(best of {args.repeats}; {args.epochs} epochs per split)")


if __name__ == "__main__":
    main()
