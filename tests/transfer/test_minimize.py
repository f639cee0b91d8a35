"""Every strategy in a regression study (minimize): a transfer is kept only if the loss falls.

Three splits of sklearn's diabetes data train a small MLP with ``nn.MSELoss()`` and
``metric="loss"``, one after the other (replayable): split 0 learns slowly, split 1 never
does (learning rate 0) and split 2 fast, so each strategy meets donors that lower a
receiver's validation loss (0 for 1) and donors that would raise it (0 and 1 for 2).
Every judged candidate must be kept exactly when its loss is lower.
"""

from __future__ import annotations

import math

import pytest
import torch
from optuna.distributions import FloatDistribution
from torch import nn

import optuna_mto
from optuna_mto.transfer import (
    AdaptiveTransfer,
    GreedyTransfer,
    InterpolateTransfer,
    NoTransfer,
    PBTTransfer,
    RescueTransfer,
)

LEARNING_RATES = {0: 2e-3, 1: 0.0, 2: 3e-2}


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1))


def make_optimizer(params, trial) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=LEARNING_RATES[trial.split])


@pytest.fixture(scope="module")
def diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data / data.data.std(0), dtype=torch.float32)
    target = (data.target - data.target.mean()) / data.target.std()
    return x, torch.tensor(target, dtype=torch.float32).view(-1, 1)


STRATEGIES = {
    "GreedyTransfer": lambda: GreedyTransfer(donor="uniform", only_better=False),
    "InterpolateTransfer": lambda: InterpolateTransfer(
        donor="uniform", only_better=False, alphas=(0.5, 1.0)
    ),
    "PBTTransfer": lambda: PBTTransfer(
        donor="uniform",
        only_better=False,
        hyperparams={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
    ),
    "AdaptiveTransfer": lambda: AdaptiveTransfer(temperature=1.0),
    # Transfers only into a split that stalled clearly behind: split 1, never rejected.
    "RescueTransfer": lambda: RescueTransfer(patience=1, gate="own"),
}
#: Strategies that also try donors that raise the receiver's loss.
TRIES_WORSE = {"GreedyTransfer", "InterpolateTransfer", "PBTTransfer", "AdaptiveTransfer"}
#: Strategies whose moves are kept unjudged (tested minimizing in their own file):
#: AveragingTransfer in test_average.py.
UNJUDGED = {"AveragingTransfer"}


def test_every_strategy_of_the_package_is_tested_here():
    names = {
        name
        for name in optuna_mto.transfer.__all__
        if isinstance(getattr(optuna_mto.transfer, name), type)
        and issubclass(getattr(optuna_mto.transfer, name), optuna_mto.transfer.BaseTransferManager)
    }
    assert names - {"BaseTransferManager", NoTransfer.__name__} - UNJUDGED == set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_transfer_is_kept_only_when_the_validation_loss_falls(name, diabetes, study_name):
    x, y = diabetes
    trainer = optuna_mto.SupervisedTrainer(
        make_model, (x, y), optimizer_fn=make_optimizer, loss_fn=nn.MSELoss(), metric="loss",
        epochs=5, batch_size=32, seed=0,
    )  # fmt: skip
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=3, direction=trainer.direction, seed=0,
        transfer=STRATEGIES[name](), heartbeat_interval=None,
    )  # fmt: skip
    study.optimize(trainer, dashboard=False)  # one split after the other

    judged = [e for e in study.transfers() if not math.isnan(e.after)]
    assert any(e.accepted for e in judged), judged
    assert any(not e.accepted for e in judged) or name not in TRIES_WORSE, judged
    for event in judged:  # lower is better: kept exactly when the candidate's loss is lower
        assert event.accepted == (event.after < event.before), event
    # Split 1 never learns by itself: its loss fell through the transfers it kept.
    trial = next(t for t in study.study.get_trials() if t.params["split"] == 1)
    assert study.summary().own[1] < trial.intermediate_values[0]
