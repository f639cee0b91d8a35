"""SupervisedTrainer's input checks: targets against metric and loss, one trial batch.

Every message names the value found and the fix; a shape error surfaces before any
split starts, so no trial (and no retry) is spent on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import adam_fast, tiny_mlp
from torch import nn

import optuna_mto
from optuna_mto.transfer import NoTransfer


def _regressor() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 1))


def _wrong_inputs() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 10))


def _two_classes() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("targets", "kwargs", "match"),
    [
        (
            lambda y: y.float(),
            {},
            r"metric='accuracy' needs class indices \(integers 0..C-1, dtype int64\), but y has "
            r"dtype torch.float32: pass y.long\(\) \(the values are whole numbers\)",
        ),
        (
            lambda y: y.float() / 3,
            {},
            "dtype torch.float32: for regression targets use metric='loss' with "
            r"loss_fn=nn.MSELoss\(\)",
        ),
        (
            lambda y: np.array(["benign", "malignant"])[y.numpy() % 2],
            {},
            r"y holds strings \(e.g. 'benign'\), which torch cannot hold: encode them as class "
            "indices 0..C-1 first, e.g. y = sklearn.preprocessing.LabelEncoder",
        ),
        (
            lambda y: nn.functional.one_hot(y, 10),
            {},
            r"shape \(N,\), but y has shape \(1797, 10\): for one-hot rows pass y.argmax\(1\)",
        ),
        (lambda y: y.view(-1, 1), {}, r"shape \(1797, 1\): pass y.view\(-1\)"),
        (lambda y: y - 1, {}, "class indices 0..C-1, but y holds -1"),
        (
            lambda y: y,
            {"metric": "loss", "loss_fn": nn.MSELoss()},
            r"loss_fn=MSELoss\(\) needs float targets, but y has dtype torch.int64: pass "
            r"y.float\(\)",
        ),
        (
            lambda y: y.float(),
            {"loss_fn": nn.MSELoss()},
            r"metric='accuracy' scores class predictions, but loss_fn=MSELoss\(\) is a "
            "regression loss: use metric='loss'",
        ),
    ],
)
def test_targets_that_do_not_suit_the_metric_are_refused_at_construction(
    digits, targets, kwargs, match
):
    x, y = digits
    with pytest.raises(ValueError, match=match):
        optuna_mto.SupervisedTrainer(tiny_mlp, (x, targets(y)), **kwargs)


def test_soft_labels_with_cross_entropy_loss_are_accepted(digits):
    x, y = digits
    soft = nn.functional.one_hot(y, 10).float()
    trainer = optuna_mto.SupervisedTrainer(tiny_mlp, (x, soft), metric="loss")
    trainer.check_inputs()
    assert trainer.targets is None  # no per-row label to stratify on


def test_a_wrong_input_size_is_reported_once_before_any_trial(study_name, digits):
    trainer = optuna_mto.SupervisedTrainer(_wrong_inputs, digits, epochs=1)
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    with pytest.raises(ValueError) as info:
        study.optimize(trainer, n_jobs=2, executor="thread")
    assert str(info.value).startswith(
        "The model cannot take the dataset's inputs: model(X[:8]) with X[:8] of shape (8, 64) "
        "raised RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    )
    assert "Make the model's first layer take rows of shape (64,) (e.g. nn.Linear(64, ...))" in (
        str(info.value)
    )
    assert study.study.get_trials() == []  # nothing ran, no retry was spent


def test_too_few_outputs_for_the_labels_is_reported(digits):
    trainer = optuna_mto.SupervisedTrainer(_two_classes, digits)
    match = r"The labels go up to 9 .10 classes., but the model returns 2 score\(s\) per row"
    with pytest.raises(ValueError, match=match + ".*give its last layer 10 outputs"):
        trainer.check_inputs()


def test_regression_targets_must_match_the_output_shape(digits):
    x, y = digits
    flat = optuna_mto.SupervisedTrainer(
        _regressor, (x, y.float()), metric="loss", loss_fn=nn.MSELoss()
    )
    match = (
        r"model\(X\[:8\]\) has shape \(8, 1\) but its targets y\[:8\] have shape \(8,\); "
        r"MSELoss would broadcast them into wrong values: reshape the targets with y.view\(-1, 1\)"
    )
    with pytest.raises(ValueError, match=match):
        flat.check_inputs()
    no_check = optuna_mto.SupervisedTrainer(
        _regressor, (x, y.float()), metric="loss", loss_fn=nn.MSELoss(), check_first_batch=False
    )
    no_check.check_inputs()  # turned off: nothing runs


def test_n_by_1_regression_targets_train_a_study(study_name, digits):
    x, y = digits[0][:600], digits[1][:600]
    target = (y.float() / 9).view(-1, 1)  # (N, 1) float targets, as the model's output
    trainer = optuna_mto.SupervisedTrainer(
        _regressor, (x, target), metric="loss", loss_fn=nn.MSELoss(), epochs=4,
        optimizer_fn=adam_fast,
    )  # fmt: skip
    assert trainer.direction == "minimize"
    assert trainer.targets.shape == (600,)
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, direction=trainer.direction, transfer=NoTransfer()
    )
    study.optimize(trainer)
    summary = study.summary()
    assert len(summary.ranking) == 2
    assert 0 < summary.mean[summary.best_split] < float(target.var())  # beats a constant


def test_a_dataset_object_is_checked_on_its_first_batch(digits):
    x, y = digits
    data = torch.utils.data.TensorDataset(x, y.float())
    trainer = optuna_mto.SupervisedTrainer(tiny_mlp, data)
    with pytest.raises(ValueError, match="metric='accuracy' needs class indices"):
        trainer.check_inputs()


@pytest.mark.parametrize(
    ("metric", "loss_fn", "task"),
    [
        ("accuracy", None, "classification"),
        ("loss", nn.CrossEntropyLoss(), "classification"),
        ("loss", nn.NLLLoss(), "classification"),
        ("loss", nn.MSELoss(), "regression"),
        ("loss", nn.HuberLoss(), "regression"),
        ("loss", nn.BCEWithLogitsLoss(), None),  # one logit or many labels: not said
    ],
)
def test_the_trainer_tells_its_task_from_metric_and_loss(metric, loss_fn, task):
    y = torch.zeros(8) if isinstance(loss_fn, (nn.MSELoss, nn.HuberLoss)) else torch.zeros(8).long()
    if isinstance(loss_fn, nn.BCEWithLogitsLoss):
        y = torch.zeros(8, 1)
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, (torch.zeros(8, 64), y), metric=metric, loss_fn=loss_fn
    )
    assert trainer.task == task
