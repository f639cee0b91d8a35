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


def test_the_mixer_mixes_each_batch_with_a_seeded_shuffle_of_itself():
    from optuna_mto._study.distill import Mixer

    x = torch.arange(12, dtype=torch.float32).view(6, 2)
    same, lam, perm = Mixer(0.0, seed=1)(x)
    assert same is x and lam == 1.0 and perm is None
    mixed, lam, perm = Mixer(1.0, seed=1)(x)
    assert 0.0 < lam < 1.0 and sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    again, lam2, perm2 = Mixer(1.0, seed=1)(x)  # seeded: the same mixing
    assert lam2 == lam and torch.equal(perm2, perm) and torch.equal(again, mixed)
    other = Mixer(1.0, seed=2)(x)[1]
    assert other != lam
    # The labels' loss is both partners', weighted as the inputs were.
    out, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    ce = nn.functional.cross_entropy
    want = lam * ce(out, labels) + (1 - lam) * ce(out, labels[perm])
    assert torch.allclose(Mixer.loss(ce, out, labels, lam, perm), want)
    assert torch.allclose(Mixer.loss(ce, out, labels, 1.0, None), ce(out, labels))


def test_mixup_refuses_inputs_that_cannot_be_averaged():
    from optuna_mto._study.distill import Mixer

    with pytest.raises(TypeError, match=r"mixup=1.0 .*torch.int64.*Use mixup=0"):
        Mixer(1.0, seed=0)(torch.tensor([[1, 2], [3, 4]]))


def test_a_student_learns_the_ensembles_classes_from_mixed_images(digits):
    """Function matching: the teacher labels mixed rows; the student still learns its classes."""
    x, y = digits
    torch.manual_seed(0)
    members = [_fit(_mlp(10), x[i::3], y[i::3], nn.functional.cross_entropy) for i in range(3)]
    teacher = Ensemble(members, combine="softmax")
    student = _mlp(10)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    batches = lambda epoch: [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]  # noqa: E731
    distill(teacher, student, batches, task="classification", epochs=30, optimizer=opt,
            mixup=1.0, hard_weight=0.5, seed=3)  # fmt: skip
    with torch.no_grad():
        agree = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    assert agree > 0.9, agree  # chance: 0.1
