"""Tiny module-level models and objectives (picklable, so process workers can use them)."""

from __future__ import annotations

import torch
from torch import nn

import optuna_mto


def tiny_mlp() -> nn.Module:
    """A 64-16-10 MLP for sklearn digits."""
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def adam_fast(params) -> torch.optim.Optimizer:
    """Adam with a learning rate that learns digits in a few epochs."""
    return torch.optim.Adam(params, lr=1e-2)


def digits_trainer(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 3, **kwargs
) -> optuna_mto.SupervisedTrainer:
    """A fast trainer on sklearn digits."""
    kwargs.setdefault("optimizer_fn", adam_fast)
    return optuna_mto.SupervisedTrainer(tiny_mlp, (x, y), epochs=epochs, batch_size=64, **kwargs)


class SlowTrainer(optuna_mto.SupervisedTrainer):
    """A digits trainer whose epochs take at least ``epoch_s`` seconds (to be killed mid-run)."""

    def __init__(self, *args, epoch_s: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_s = epoch_s

    def train_epoch(self, model, optimizer, indices, generator) -> float:
        import time

        start = time.monotonic()
        loss = super().train_epoch(model, optimizer, indices, generator)
        time.sleep(max(0.0, self.epoch_s - (time.monotonic() - start)))
        return loss


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data / 16.0, dtype=torch.float32), torch.tensor(data.target)


#: For `optuna-mto worker --objective _models:worker_trainer` (needs PYTHONPATH=tests).
worker_trainer = SlowTrainer(tiny_mlp, _digits(), epochs=6, optimizer_fn=adam_fast, epoch_s=0.2)


class FailOnSplit:
    """A trainer whose split ``split`` raises ``RuntimeError`` after its first report.

    (An error before the first report is not retried in the same ``optimize`` call.)
    """

    def __init__(self, trainer: optuna_mto.SupervisedTrainer, split: int = 1) -> None:
        self.trainer, self.split = trainer, split
        self.dataset, self.evaluate = trainer.dataset, trainer.evaluate

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        if trial.split == self.split:
            report = trial.report

            def report_then_fail(value, step, **kwargs):
                report(value, step, **kwargs)
                raise RuntimeError(f"split {self.split} is broken")

            trial.report = report_then_fail
        self.trainer(trial)


def adam_suggested(params, trial) -> torch.optim.Optimizer:
    """Adam whose learning rate the study's sampler draws per split."""
    return torch.optim.Adam(params, lr=trial.suggest_float("lr", 3e-3, 3e-2, log=True))


#: The split whose model is hopeless in :func:`mlp_hopeless_split1`.
HOPELESS_SPLIT = 1


def mlp_hopeless_split1(trial) -> nn.Module:
    """tiny_mlp; split 1's first layer is frozen at zero, so it never sees its input."""
    model = tiny_mlp()
    if trial.split == HOPELESS_SPLIT:
        with torch.no_grad():
            model[0].weight.zero_()
        model[0].weight.requires_grad_(False)
    return model
