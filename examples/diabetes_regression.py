"""Regression: a small MLP on sklearn's diabetes data as K=4 split trials (offline, CPU).

442 patients, 10 features, one number to predict (disease progression a year later),
standardised. 110 patients are held out as a test set no split ever sees; the rest are
split at random into K (train, validation) pairs. ``metric="loss"`` with ``nn.MSELoss()``
makes it a regression study: ``direction="minimize"``, and the ensemble of the K models
is the mean of their outputs (``task="regression"``; the trainer also tells the study).

    python examples/diabetes_regression.py                   # greedy transfer (default)
    python examples/diabetes_regression.py --transfer none   # independent splits

The study lives in storage/optuna_mto.db (SQLite); run it again and it only reports.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn

import optuna_mto
from optuna_mto.transfer import GreedyTransfer, NoTransfer


def make_model() -> nn.Module:
    """A 10-32-1 MLP: one output per row."""
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))


def make_optimizer(params) -> torch.optim.Optimizer:  # module-level, for worker processes
    return torch.optim.Adam(params, lr=1e-2)


def load_diabetes(test_size: int = 110, seed: int = 0):
    """Return ((X_train, y_train), (X_test, y_test)), standardised, targets of shape (N, 1)."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes

    data = sklearn_diabetes()  # ships with scikit-learn: no download
    x = torch.tensor(data.data / data.data.std(0), dtype=torch.float32)
    target = (data.target - data.target.mean()) / data.target.std()
    y = torch.tensor(target, dtype=torch.float32).view(-1, 1)  # float, as nn.MSELoss needs
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(x)))
    test, train = order[:test_size], order[test_size:]
    return (x[train], y[train]), (x[test], y[test])


def test_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model.eval()(x) - y) ** 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-name", default=None, help="default: diabetes-<transfer>-s<seed>")
    parser.add_argument("--storage", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--n-splits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2, help="splits trained at once")
    parser.add_argument("--transfer", choices=["greedy", "none"], default="greedy")
    parser.add_argument("--export-ensemble", default="storage/diabetes_ensemble.pt")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = load_diabetes(seed=args.seed)
    trainer = optuna_mto.SupervisedTrainer(
        make_model,
        (x_train, y_train),
        optimizer_fn=make_optimizer,
        loss_fn=nn.MSELoss(),
        metric="loss",  # the validation MSE: lower is better
        epochs=args.epochs,
        batch_size=32,
        seed=args.seed,
    )
    study = optuna_mto.create_study(
        study_name=args.study_name or f"diabetes-{args.transfer}-s{args.seed}",
        storage=args.storage,
        n_splits=args.n_splits,
        direction=trainer.direction,  # "minimize"
        task="regression",  # the ensemble averages the outputs (trainer.task says so too)
        seed=args.seed,
        selection_fraction=0.1,  # rows no split trains on rank the models
        transfer=GreedyTransfer() if args.transfer == "greedy" else NoTransfer(),
        load_if_exists=True,
    )
    try:
        study.optimize(trainer, n_jobs=args.n_jobs)
    except KeyboardInterrupt:
        sys.exit(130)  # rerun to resume
    summary = study.summary()
    print(summary)
    if not summary.complete:
        sys.exit(f"error: the study is incomplete ({summary.incomplete_reason}); run it again")

    print(f"predicting the mean: held-out test MSE {float((y_test**2).mean()):.4f}")
    single = study.load_best_model(make_model())
    mse = test_mse(single, x_test, y_test)
    print(f"chosen model: split {summary.best_split}, held-out test MSE {mse:.4f}")
    path = study.export_ensemble(args.export_ensemble)
    ensemble = optuna_mto.Ensemble.load(path, make_model)  # count and combine from the file
    mse = test_mse(ensemble, x_test, y_test)
    print(
        f"ensemble of the {len(ensemble.members)} models (combine={ensemble.combine!r}): "
        f"held-out test MSE {mse:.4f}; exported to {path}"
    )
    try:
        soup, members, _ = study.soup(make_model, "greedy", evaluate=trainer.evaluate)
        mse = test_mse(soup, x_test, y_test)
        print(f"greedy soup of splits {members}: held-out test MSE {mse:.4f}")
    except ValueError as err:  # e.g. independent splits share no ancestry
        print(f"greedy soup refused: {str(err).split(':')[0]}")


if __name__ == "__main__":
    main()
