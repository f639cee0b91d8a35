"""Input checks of SupervisedTrainer: targets against the metric and loss, one trial batch.

Each check names the value it found and the change that fixes it, so that a wrong
dtype or shape is reported once, before any split starts, instead of as a torch error
inside every worker (and again in every retry).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["as_targets", "check_first_batch", "check_targets", "label_targets", "task_of"]

#: Losses that take class indices (CrossEntropyLoss also takes class probabilities).
_CLASS_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)
#: Losses that compare float outputs with float targets of the same shape.
_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_ENCODE_HINT = (
    "encode them as class indices 0..C-1 first, e.g. "
    "y = sklearn.preprocessing.LabelEncoder().fit_transform(y) or "
    "classes, y = numpy.unique(y, return_inverse=True)"
)


def as_targets(y: Any) -> torch.Tensor:
    """Return ``y`` as a tensor, refusing text labels with a hint to encode them.

    Raises:
        ValueError: For string or object labels, which torch cannot hold.
    """
    if isinstance(y, torch.Tensor):
        return y
    array = np.asarray(y)
    if array.dtype.kind in "USO":
        example = array.reshape(-1)[0].item() if array.size else None
        kind = "objects" if array.dtype.kind == "O" else "strings"
        raise ValueError(
            f"y holds {kind} (e.g. {example!r}), which torch cannot hold: {_ENCODE_HINT}."
        )
    return torch.as_tensor(array)


def _loss_name(loss_fn: nn.Module) -> str:
    return f"loss_fn={type(loss_fn).__name__}()"


def check_targets(y: torch.Tensor, metric: str, loss_fn: nn.Module) -> None:
    """Check that the targets suit the metric and the loss (dtype, shape, range).

    ``metric="accuracy"`` and the classification losses (cross-entropy, NLL) need
    class indices: integers ``0..C-1`` of shape ``(N,)``. Regression losses (MSE, L1,
    smooth L1, Huber) need float targets; ``(N,)`` and ``(N, k)`` both work, as long
    as the model's output has the same shape (checked on the first batch).

    Raises:
        ValueError: Naming the targets' dtype or shape and the fix.
    """
    regression = isinstance(loss_fn, _REGRESSION_LOSSES)
    if metric == "accuracy" and regression:
        raise ValueError(
            f"metric='accuracy' scores class predictions, but {_loss_name(loss_fn)} is a "
            "regression loss: use metric='loss' (and direction='minimize') for regression, "
            "or a classification loss such as nn.CrossEntropyLoss() for classes."
        )
    soft_labels = (
        metric == "loss"
        and isinstance(loss_fn, nn.CrossEntropyLoss)
        and y.is_floating_point()
        and y.ndim == 2
    )
    if (metric == "accuracy" or isinstance(loss_fn, _CLASS_LOSSES)) and not soft_labels:
        _check_class_indices(
            y, "metric='accuracy'" if metric == "accuracy" else _loss_name(loss_fn)
        )
    if regression and not y.is_floating_point():
        raise ValueError(
            f"{_loss_name(loss_fn)} needs float targets, but y has dtype {y.dtype}: pass "
            "y.float() (or, for class labels, metric='accuracy' with nn.CrossEntropyLoss())."
        )


def task_of(metric: str, loss_fn: nn.Module) -> str | None:
    """The task a metric and loss imply, or None when they do not tell.

    ``metric="accuracy"`` and the classification losses (cross-entropy, NLL,
    multi-margin) mean ``"classification"``; MSE, L1, smooth L1 and Huber mean
    ``"regression"``. Other losses (``BCEWithLogitsLoss``, custom ones) say nothing.
    """
    if metric == "accuracy" or isinstance(loss_fn, _CLASS_LOSSES):
        return "classification"
    if isinstance(loss_fn, _REGRESSION_LOSSES):
        return "regression"
    return None


def _check_class_indices(y: torch.Tensor, needed_by: str) -> None:
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        whole = bool(y.is_floating_point() and torch.all(y == torch.round(y)))
        fix = (
            "pass y.long() (the values are whole numbers)"
            if whole
            else "for regression targets use metric='loss' with loss_fn=nn.MSELoss() and "
            "direction='minimize'"
        )
        if y.dtype == torch.bool:
            fix = "pass y.long()"
        raise ValueError(
            f"{needed_by} needs class indices (integers 0..C-1, dtype int64), but y has dtype "
            f"{y.dtype}: {fix}."
        )
    if y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            fix = "pass y.view(-1)"
        elif y.ndim == 2:
            fix = "for one-hot rows pass y.argmax(1)"
        else:
            fix = "pass one class index per row"
        raise ValueError(
            f"{needed_by} needs one class index per row, shape (N,), but y has shape "
            f"{tuple(y.shape)}: {fix}."
        )
    if len(y) and int(y.min()) < 0:
        raise ValueError(
            f"{needed_by} needs class indices 0..C-1, but y holds {int(y.min())}: {_ENCODE_HINT}."
        )


def label_targets(y: torch.Tensor) -> np.ndarray | None:
    """The per-row labels used for stratified splits and the dataset fingerprint.

    ``(N,)`` targets as they are, ``(N, 1)`` flattened, wider targets (multi-output
    regression, class probabilities): None.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        return None
    return y.cpu().numpy().copy()


def check_first_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    metric: str,
    loss_fn: nn.Module,
    n_classes: int | None,
) -> None:
    """Run one small batch forward and backward and check the output's shape.

    Args:
        model: A freshly built model (on the CPU).
        inputs: The first rows of the dataset.
        labels: Their targets.
        metric: ``"accuracy"`` or ``"loss"``.
        loss_fn: The training loss.
        n_classes: ``max(label) + 1`` over the whole dataset for class targets, else None.

    Raises:
        ValueError: Naming the shapes involved and the fix, for an input the model
            cannot take, an output that does not fit the targets, or a loss that fails.
    """
    outputs = _first_outputs(model, inputs)
    _check_output_shape(len(inputs), outputs, labels, loss_fn, n_classes)
    out_shape = tuple(outputs.shape)
    try:
        loss = loss_fn(outputs, labels)
        loss.backward()
    except Exception as err:  # noqa: BLE001 - re-raised with the shapes and the fix.
        raise ValueError(
            f"{_loss_name(loss_fn)} fails on the first batch (outputs of shape {out_shape}, "
            f"dtype {outputs.dtype}; targets of shape {tuple(labels.shape)}, dtype "
            f"{labels.dtype}): {type(err).__name__}: {_first_line(err)}."
        ) from None


def _first_outputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Return ``model(inputs)``; a ValueError with the shapes when it fails or is no tensor."""
    n = len(inputs)
    shape = tuple(inputs.shape)
    try:
        outputs = model(inputs)
    except Exception as err:  # noqa: BLE001 - re-raised with the shapes and the fix.
        raise ValueError(
            f"The model cannot take the dataset's inputs: model(X[:{n}]) with X[:{n}] of "
            f"shape {shape} raised {type(err).__name__}: {_first_line(err)}. Make the "
            f"model's first layer take rows of shape {shape[1:]} (e.g. nn.Linear("
            f"{shape[1] if len(shape) == 2 else '...'}, ...))."
        ) from None
    if not isinstance(outputs, torch.Tensor):
        raise ValueError(
            f"SupervisedTrainer needs a model that returns one tensor, but model(X[:{n}]) "
            f"returned {type(outputs).__name__}; write an objective (optimize(objective, ...)) "
            "for other models."
        )
    return outputs


def _check_output_shape(
    n: int, outputs: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module, n_classes: int | None
) -> None:
    """Check ``model(X[:n])`` against its targets: a score per class, or the targets' shape."""
    out_shape = tuple(outputs.shape)
    if n_classes is not None and not (labels.is_floating_point() and labels.ndim == 2):
        if outputs.ndim != 2 or outputs.shape[0] != n:
            raise ValueError(
                f"For class targets the model must return one score per class and row, shape "
                f"({n}, C), but model(X[:{n}]) has shape {out_shape}."
            )
        if outputs.shape[1] < n_classes:
            raise ValueError(
                f"The labels go up to {n_classes - 1} ({n_classes} classes), but the model "
                f"returns {outputs.shape[1]} score(s) per row (output shape {out_shape}): give "
                f"its last layer {n_classes} outputs."
            )
    elif isinstance(loss_fn, _REGRESSION_LOSSES) and out_shape != tuple(labels.shape):
        fix = (
            "reshape the targets with y.view(-1, 1)"
            if out_shape == (n, 1) and labels.ndim == 1
            else "make the model's output match the targets' shape"
        )
        raise ValueError(
            f"model(X[:{n}]) has shape {out_shape} but its targets y[:{n}] have shape "
            f"{tuple(labels.shape)}; {type(loss_fn).__name__} would broadcast them into "
            f"wrong values: {fix}."
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
