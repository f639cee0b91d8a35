"""SupervisedTrainer: its metrics against a direct computation, init, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import tiny_mlp

import optuna_mto


def _trainer(digits, **kwargs) -> optuna_mto.SupervisedTrainer:
    kwargs = {"batch_size": 50, "eval_batch_size": 100, **kwargs}
    return optuna_mto.SupervisedTrainer(tiny_mlp, digits, **kwargs)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).permutation(1797)[:333]  # several uneven batches


def test_accuracy_and_loss_equal_a_direct_computation(digits, rows):
    x, y = digits
    torch.manual_seed(0)
    model = tiny_mlp()
    with torch.no_grad():
        outputs = model(x[rows])
    accuracy = int((outputs.argmax(1) == y[rows]).sum()) / len(rows)
    loss = float(torch.nn.functional.cross_entropy(outputs, y[rows]))

    assert _trainer(digits).evaluate(model, rows) == accuracy
    assert _trainer(digits, metric="loss").evaluate(model, rows) == pytest.approx(loss, rel=1e-6)
    assert np.isnan(_trainer(digits).evaluate(model, np.array([], dtype=np.int64)))


def test_train_epoch_returns_the_mean_loss_of_its_batches_and_learns(digits, rows):
    x, y = digits
    trainer = _trainer(digits)
    torch.manual_seed(0)
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: losses are reproducible
    generator = torch.Generator().manual_seed(1)
    mean = trainer.train_epoch(model, optimizer, rows, generator)
    with torch.no_grad():
        full = float(torch.nn.functional.cross_entropy(model(x[rows]), y[rows]))
    assert mean == pytest.approx(full, rel=1e-5)  # same weights: batch means average to it

    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = trainer.evaluate(model, rows)
    for epoch in range(5):
        trainer.train_epoch(model, optimizer, rows, torch.Generator().manual_seed(epoch))
    assert trainer.evaluate(model, rows) > before + 0.3


def test_initialisation_is_seeded_per_split_unless_same_init(digits):
    trainer = _trainer(digits, seed=3)
    first, again, other = (trainer.build_model(s) for s in (0, 0, 1))
    assert torch.equal(first[0].weight, again[0].weight)
    assert not torch.equal(first[0].weight, other[0].weight)
    same = _trainer(digits, seed=3, same_init=True)
    assert torch.equal(same.build_model(0)[0].weight, same.build_model(5)[0].weight)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "f1"}, "metric='f1'"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_name_the_value(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _trainer(digits, **kwargs)
    x, y = digits
    with pytest.raises(ValueError, match=r"equal length, but got lengths \[1797, 10\]"):
        optuna_mto.SupervisedTrainer(tiny_mlp, (x, y[:10]))
