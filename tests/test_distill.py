"""Ensemble distillation: one student matches the K-model teacher (classes and numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optuna_mto._study.distill import distill, distillation_loss, teacher_targets
from optuna_mto._study.ensemble import Ensemble


def _fit(model: nn.Module, x, y, loss_fn, epochs: int = 60, lr: float = 1e-2) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()


def _mlp(out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, out))


def test_the_loss_is_zero_for_a_student_equal_to_the_teacher_and_positive_otherwise():
    logits = torch.randn(8, 10)
    probs = logits.softmax(dim=1)
    for t in (1.0, 3.0):
        same = distillation_loss(logits, probs, "classification", temperature=t)
        assert float(same) == pytest.approx(0.0, abs=1e-5)
        assert float(distillation_loss(torch.zeros(8, 10), probs, "classification", t)) > 0
    assert float(distillation_loss(torch.ones(4, 1), torch.ones(4), "regression")) == 0.0


def test_a_student_learns_the_ensembles_classes(digits):
    x, y = digits
    torch.manual_seed(0)
    members = [_fit(_mlp(10), x[i::3], y[i::3], nn.functional.cross_entropy) for i in range(3)]
    teacher = Ensemble(members, combine="softmax")
    targets = teacher_targets(teacher, x[:5], "classification")
    assert torch.allclose(targets.sum(dim=1), torch.ones(5))

    student = _mlp(10)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(distillation_loss(student(x), teacher_targets(teacher, x, "classification"),
                                         "classification"))  # fmt: skip
    distill(teacher, student, lambda epoch: [(x, y)], task="classification", epochs=80,
            optimizer=opt)  # fmt: skip
    with torch.no_grad():
        after = float(distillation_loss(student(x), teacher_targets(teacher, x, "classification"),
                                        "classification"))  # fmt: skip
        agree = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    assert after < before / 5 and agree > 0.95
    assert not student.training


def test_a_student_learns_the_ensembles_mean_for_regression():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=gen)
    w = torch.randn(64, 1, generator=gen)
    members = [_fit(nn.Linear(64, 1), x, x @ w + 0.1 * i, nn.functional.mse_loss, 300)
               for i in range(3)]  # fmt: skip
    teacher = Ensemble(members, combine="mean")
    student = nn.Linear(64, 1)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    distill(teacher, student, lambda epoch: [(x, torch.zeros(len(x), 1))], task="regression",
            epochs=300, optimizer=opt)  # fmt: skip
    with torch.no_grad():
        gap = float((student(x) - teacher(x)).abs().mean())
        spread = float(teacher(x).std())
    assert np.isfinite(gap) and gap < 0.05 * spread
