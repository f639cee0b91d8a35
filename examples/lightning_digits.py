"""Train a PyTorch Lightning module on sklearn's digits as K=2 split trials with transfer.

Any LightningModule becomes a split trial by adding one callback,
``optuna_mto.integration.MTOCallback(trial, monitor="val_acc")``: at the end of each
validation it reports the logged metric, checkpoints the module, and may load a better
split's weights into the module and its optimizer in place; a killed split resumes at
its epoch and global step. Runs offline on the CPU in under a minute on two cores (needs
``pip install 'optuna-mto[lightning]'`` and scikit-learn).

    python examples/lightning_digits.py
    python examples/lightning_digits.py --transfer none
    python examples/lightning_digits.py --mlflow sqlite:///mlflow.db   # needs [mlflow]

As README's Lightning section says: each split gets its own folder and logger
(``lightning/<study>/split<k>``; with ``--mlflow``, the split's MLflow run gets the
module's ``self.log`` metrics next to the study's curve), resume is the callback's job
(no ``ckpt_path``, no Lightning checkpoints), and ``trainer_device_kwargs`` puts each
split on its worker's device. 300 of the 1,797 digits are held out as a test set no
split sees; the ensemble of the K modules is scored on it too.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
import warnings

import numpy as np
import torch
from torch import nn

try:  # the current ``lightning`` package, or the older ``pytorch_lightning`` namespace
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

import optuna_mto
from optuna_mto.integration import MLflowCallback, MTOCallback, trainer_device_kwargs
from optuna_mto.transfer import GreedyTransfer, NoTransfer

TEST_SIZE = 300


class LitDigits(pl.LightningModule):
    """A 64-32-10 MLP with SGD and a step LR schedule."""

    def __init__(self, lr: float = 0.05, epochs: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.epochs)
        return {"optimizer": opt, "lr_scheduler": sched}


@functools.lru_cache(maxsize=1)
def load_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return ((X_train, y_train), (X_test, y_test)); loaded once per process."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(x)))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return (x[train], y[train]), (x[test], y[test])


def evaluate(model: nn.Module, indices: np.ndarray) -> float:
    """Accuracy of ``model`` on rows ``indices`` of the training set (same as val_acc)."""
    (x, y), _ = load_data()
    rows = torch.as_tensor(indices)
    device = next(model.parameters()).device
    with torch.no_grad():
        predicted = model(x[rows].to(device)).argmax(1).cpu()
    return float((predicted == y[rows]).float().mean())


def _loader(rows: np.ndarray, shuffle: bool) -> torch.utils.data.DataLoader:
    (x, y), _ = load_data()
    rows = torch.as_tensor(rows)
    data = torch.utils.data.TensorDataset(x[rows], y[rows])
    return torch.utils.data.DataLoader(data, batch_size=64, shuffle=shuffle)


class Objective:
    """Fit one LitDigits per split; picklable, so splits can run in worker processes."""

    def __init__(self, epochs: int, seed: int, tracker: MLflowCallback | None = None) -> None:
        self.epochs = epochs
        self.seed = seed
        self.tracker = tracker

    def logger(self, trial: optuna_mto.SplitTrial, folder: str) -> pl.loggers.Logger:
        """The split's own logger: its MLflow run, else a CSV file in its folder."""
        if self.tracker is None:
            return pl.loggers.CSVLogger(folder, name="", version="")
        return pl.loggers.MLFlowLogger(
            tracking_uri=self.tracker.tracking_uri, run_id=self.tracker.split_run_id(trial)
        )

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        _quiet()  # also in spawned worker processes
        pl.seed_everything(self.seed * 1000 + trial.split, verbose=False)
        module = LitDigits(epochs=self.epochs)
        folder = f"lightning/{trial.optuna_trial.study.study_name}/split{trial.split}"
        trainer = pl.Trainer(
            max_epochs=self.epochs,
            callbacks=[MTOCallback(trial, monitor="val_acc")],  # report, transfer, resume
            default_root_dir=folder,  # one folder per split, not one lightning_logs
            logger=self.logger(trial, folder),
            enable_checkpointing=False,  # the study checkpoints and resumes the split
            enable_progress_bar=False,
            enable_model_summary=False,
            **trainer_device_kwargs(trial),  # the worker's one device
        )
        trainer.fit(module, _loader(trial.train_indices, True), _loader(trial.valid_indices, False))


def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-name", default=None, help="default: lightning-digits-<transfer>")
    parser.add_argument("--storage", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--n-splits", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=None, help="default: n-splits")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transfer", choices=["greedy", "none"], default="greedy")
    parser.add_argument("--mlflow", default=None, help="MLflow tracking URI: one run per split")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _quiet()

    (x_train, y_train), (x_test, y_test) = load_data()
    transfer = GreedyTransfer(interval=1, warmup=1) if args.transfer == "greedy" else NoTransfer()
    study = optuna_mto.create_study(
        study_name=args.study_name or f"lightning-digits-{args.transfer}-s{args.seed}",
        storage=args.storage,
        n_splits=args.n_splits,
        direction="maximize",
        seed=args.seed,
        transfer=transfer,
        load_if_exists=True,
    )
    tracker = None if args.mlflow is None else MLflowCallback(tracking_uri=args.mlflow)
    start = time.perf_counter()
    study.optimize(
        Objective(args.epochs, args.seed, tracker),
        dataset=(x_train, y_train),
        evaluate=evaluate,
        n_jobs=args.n_jobs or args.n_splits,
        callbacks=[] if tracker is None else [tracker],
    )
    elapsed = time.perf_counter() - start

    summary = study.summary()
    print(summary)
    model = study.load_best_model(LitDigits())
    model.eval()
    ensemble = study.ensemble(LitDigits, combine="softmax")  # best ranked split first
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
        ensemble_acc = float((ensemble(x_test).argmax(1) == y_test).float().mean())
    events = study.transfers()
    print(f"transfers kept/tried: {sum(e.accepted for e in events)}/"
          f"{sum(not e.reason for e in events)}")  # fmt: skip
    print(
        f"chosen model: split {summary.best_split}, cross-split mean "
        f"{summary.mean[summary.best_split]:.4f}, held-out test accuracy {test_acc:.4f}; "
        f"optimize took {elapsed:.1f} s"
    )
    print(f"ensemble of splits {ensemble.splits} (member i is split splits[i]): held-out "
          f"test accuracy {ensemble_acc:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
