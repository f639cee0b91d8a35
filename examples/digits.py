"""The objective API on sklearn's 1,797 real 8x8 digits: write the loop, call trial.report.

    python examples/digits.py

Shows the lower level: the objective owns the training loop and calls
``trial.report(...)`` each epoch; optuna-mto checkpoints the model, publishes the
split's score and may swap in a better split's weights (``result.accepted``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import optuna_mto

data = load_digits()
X = torch.tensor(data.data / 16.0, dtype=torch.float32)
Y = torch.tensor(data.target, dtype=torch.long)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def evaluate(model: nn.Module, indices: np.ndarray) -> float:
    """Accuracy of ``model`` on rows ``indices`` (used for transfers and the final table)."""
    rows = torch.as_tensor(indices)
    with torch.no_grad():
        return float((model(X[rows]).argmax(1) == Y[rows]).float().mean())


def objective(trial: optuna_mto.SplitTrial) -> None:
    torch.manual_seed(trial.split)
    model = make_model().to(trial.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rows = torch.as_tensor(trial.train_indices)
    for epoch in range(trial.restore(model, optimizer), 8):  # resumes a retried split
        for batch in rows[torch.randperm(len(rows))].split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X[batch]), Y[batch]).backward()
            optimizer.step()
        result = trial.report(trial.evaluate(model), epoch, model=model, optimizer=optimizer)
        if result.accepted:
            print(
                f"split {trial.split} epoch {epoch}: took split {result.transfer.donor}'s "
                f"weights ({result.transfer.before:.3f} -> {result.transfer.after:.3f})"
            )


if __name__ == "__main__":
    study = optuna_mto.create_study(study_name="digits", n_splits=4, load_if_exists=True)
    study.optimize(objective, dataset=(X, Y), evaluate=evaluate, n_jobs=2, executor="thread")
    print(study.summary())
