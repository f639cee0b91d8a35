"""One model from a study: ``MTOStudy.teacher_targets``, ``.distill`` and ``.refit``.

The teacher is the study's ensemble of its finished splits, combined by the study's
task (:mod:`optuna_mto._study.task`); the training itself is in :mod:`optuna_mto._study.distill`.
``refit`` is the distilled model's fair baseline: the same model and rows, no teacher.
The three public functions are ``MTOStudy``'s methods as they stand (``self`` is the study).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from optuna_mto._data.dataset import dataset_info
from optuna_mto._errors import DatasetMismatchError
from optuna_mto._study.distill import distill_trainer, teacher_targets, train_without_teacher
from optuna_mto._study.outputs import build_ensemble
from optuna_mto._study.results import study_summary
from optuna_mto._study.summary import CrossSplitSummary
from optuna_mto._study.task import combine_for, study_task
from optuna_mto._trainer import SupervisedTrainer
from optuna_mto._validation import check_int
from optuna_mto.transfer import is_better

if TYPE_CHECKING:
    from optuna_mto._study.ensemble import Ensemble
    from optuna_mto._study.study import MTOStudy
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["study_distill", "study_refit", "study_teacher_targets"]


def _needs_trial(fn: Callable[..., Any], n_args: int) -> bool:
    """True if ``fn`` cannot be called without the trial after its ``n_args`` arguments."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.default is p.empty and p.kind is not p.VAR_POSITIONAL
                and p.kind is not p.VAR_KEYWORD]  # fmt: skip
    return len([p for p in required if p.kind in positional]) > n_args or any(
        p.name == "trial" for p in required
    )


def _teacher(
    rt: StudyRuntime,
    make_model: Callable[[], nn.Module],
    task: str | None,
    splits: Sequence[int] | None,
    device: torch.device | str,
    summary: CrossSplitSummary | None = None,
) -> tuple[Ensemble, str]:
    """The study's ensemble (combined by ``task``) on ``device``, and the task to match."""
    summary = summary or study_summary(rt)
    if not summary.ranking:
        raise ValueError(
            f"Study {rt.study_name!r} has no finished split to learn from (split states: "
            f"{summary.states}): run study.optimize(...) first."
        )
    ensemble = build_ensemble(rt, make_model, splits, combine_for(task), device, summary=summary)
    return ensemble, task or "regression"  # no task: the "auto" rule averages outputs


def study_teacher_targets(  # noqa: D417 (self: the study, as its method)
    self: MTOStudy,
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    splits: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the finished models' averaged soft predictions on ``x``, by the study's task.

    Classification: the mean of the K models' softmax probabilities, ``(N, classes)``,
    each row summing to 1. Regression: the mean of their outputs. For distillation in
    your own training loop, typically on every row the splits trained on (all but
    ``study.selection_indices(n)``)::

        targets = study.teacher_targets(make_model, x_train)  # once, before training
        student = make_model()
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        for epoch in range(20):
            for rows in torch.randperm(len(x_train)).split(64):
                loss = optuna_mto.distillation_loss(
                    student(x_train[rows]), targets[rows], "classification", temperature=2.0
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    Args:
        make_model: Builds one (plain) model of the splits' architecture.
        x: The inputs (one tensor).
        batch_size: Rows run through the ensemble at a time.
        splits: The members (default: every finished split).
        device: Where the models run and the targets are returned (default: ``x``'s).

    Raises:
        ValueError: If no split has finished.
    """
    check_int("batch_size", batch_size, 1)
    x = torch.as_tensor(x)
    device = x.device if device is None else device
    teacher, task = _teacher(self._rt, make_model, study_task(self._rt), splits, device)
    chunks = [teacher_targets(teacher, x[i : i + batch_size].to(device), task)
              for i in range(0, max(len(x), 1), batch_size)]  # fmt: skip
    return torch.cat(chunks)


def study_distill(
    self: MTOStudy,
    trainer: SupervisedTrainer,
    *,
    epochs: int | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    temperature: float = 1.0,
    hard_weight: float = 1.0,
    mixup: float | None = None,
    splits: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Distil the study's ensemble into one fresh model of the splits' architecture.

    The student is built, optimized and batched as ``trainer`` trains a split (its
    ``model_fn``, ``optimizer_fn``, ``batch_size``, ``seed``; no scheduler), for
    ``epochs`` (default: twice the trainer's) on ``rows`` (default: every row of the
    trainer's dataset except the study's selection rows), matching the ensemble's
    class probabilities softened by ``temperature`` (its mean output for regression),
    plus ``hard_weight`` times the trainer's loss on the true labels. With ``mixup``
    (default: 1.0 for floating-point inputs, 0 for others such as token ids) each batch
    is mixed with a shuffled copy of itself and the ensemble labels the mixed inputs
    (function matching: see :func:`optuna_mto._study.distill.distill`). The defaults
    are the recipe that did best on the MNIST benchmark (``benchmarks/README.md``, "One
    deployable model"). Returns the student in eval mode.

    Raises:
        TypeError: If ``trainer`` is not a :class:`SupervisedTrainer`.
        ValueError: If no split has finished, or ``model_fn`` or ``optimizer_fn`` needs
            the split's trial.
        DatasetMismatchError: If the trainer's dataset is not the study's size.
    """
    rows = _student_rows(self, trainer, rows, "distill")
    task = study_task(self._rt) or trainer.task
    summary = study_summary(self._rt)
    make_model = partial(trainer.build_model, -1)
    teacher, task = _teacher(self._rt, make_model, task, splits, device, summary)
    epochs, mixup = _recipe(trainer, epochs, mixup)
    student = distill_trainer(
        teacher, trainer, rows, task=task, epochs=epochs, temperature=temperature,
        hard_weight=hard_weight, mixup=mixup, device=device,
    )  # fmt: skip
    _check_model(self, trainer, student, rows, "distill", summary)
    return student


def study_refit(
    self: MTOStudy,
    trainer: SupervisedTrainer,
    *,
    epochs: int | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    mixup: float | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Train one fresh model of the splits' architecture on all their rows, no teacher.

    The model is built, optimized and batched as :meth:`distill` builds its student (the
    same start, rows, seeded batch order, ``epochs`` and ``mixup`` defaults), but learns
    the labels alone (mixed as the inputs are): the distilled model's fair baseline, and
    after cross-validation the usual "refit on everything". Returns it in eval mode.

    Raises:
        TypeError: If ``trainer`` is not a :class:`SupervisedTrainer`.
        ValueError: If ``model_fn`` or ``optimizer_fn`` needs the split's trial.
        DatasetMismatchError: If the trainer's dataset is not the study's size.
    """
    rows = _student_rows(self, trainer, rows, "refit")
    epochs, mixup = _recipe(trainer, epochs, mixup)
    model = train_without_teacher(trainer, rows, epochs=epochs, mixup=mixup, device=device)
    _check_model(self, trainer, model, rows, "refit", study_summary(self._rt))
    return model


def _check_model(
    study: MTOStudy,
    trainer: SupervisedTrainer,
    model: nn.Module,
    rows: np.ndarray,
    method: str,
    summary: CrossSplitSummary,
) -> None:
    """Warn when the new model scores below every split: its training failed.

    Judged on the selection rows when the study holds them out (no model trained on
    them), else on the model's own training rows against each split's mean cross-split
    validation: a model that cannot reach on rows it trained on what the worst split
    reaches on rows it did not has diverged or stalled. The worst split, not the best,
    so that sampling noise on a few hundred rows raises no false alarm.
    """
    if not summary.ranking:
        return
    if summary.uses_selection:
        on, where, scores = (
            study.selection_indices(_n_rows(trainer)),
            "the held-out selection rows",
            summary.selection,
        )
    else:
        on, where, scores = rows, "the rows it trained on", list(summary.mean)
    worst = summary.ranking[-1]
    reference = float(scores[worst])
    if not math.isfinite(reference):  # that split has no score there: nothing to judge by
        return
    score = trainer.evaluate(model, on)
    if not is_better(reference, score, summary.direction):  # NaN: worse than any split
        return
    warnings.warn(
        f"study.{method}(...)'s model scores {score:.4g} on {where}, worse than every split "
        f"(the worst, split {worst}: {reference:.4g}): its training failed, e.g. a learning "
        "rate that its longer, mixed recipe does not survive. Deploy study.ensemble(...) or "
        "study.load_best_model(...) instead, or try again with a lower learning rate in "
        "the trainer's optimizer_fn, fewer epochs or mixup=0.",
        stacklevel=3,
    )


def _recipe(
    trainer: SupervisedTrainer, epochs: int | None, mixup: float | None
) -> tuple[int, float]:
    """The defaults: twice the trainer's epochs; mixup 1.0 for floating-point inputs, else 0."""
    if epochs is None:
        epochs = 2 * trainer.epochs
    if mixup is None:
        data = trainer.dataset
        first = data[0] if isinstance(data, tuple) else data[0][0]
        mixup = 1.0 if torch.is_floating_point(torch.as_tensor(first)) else 0.0
    return epochs, mixup


def _student_rows(
    study: MTOStudy, trainer: Any, rows: Sequence[int] | np.ndarray | None, method: str
) -> np.ndarray:
    """Check that ``trainer`` can train a study-wide model; return its rows.

    The rows default to every row of the trainer's dataset but the selection rows.
    """
    if not isinstance(trainer, SupervisedTrainer):
        raise TypeError(
            f"study.{method}(trainer) needs an optuna_mto.SupervisedTrainer (it builds, "
            f"batches and optimizes the model as the trainer does), but got "
            f"{type(trainer).__name__}. With your own training loop, use "
            "study.teacher_targets(make_model, x) and optuna_mto.distillation_loss "
            "(see help(optuna_mto.MTOStudy.teacher_targets))."
        )
    if _needs_trial(trainer.model_fn, 0) or _needs_trial(trainer.optimizer_fn, 1):
        raise ValueError(
            f"study.{method} has no split trial to give, but the trainer's model_fn or "
            "optimizer_fn needs one (hyperparameters drawn per split): give them a default "
            "(e.g. trial=None), or use study.teacher_targets(make_model, x) and "
            "optuna_mto.distillation_loss in your own loop."
        )
    n, info = _n_rows(trainer), dataset_info(study._rt)
    if info is not None and info["n_samples"] != n:
        raise DatasetMismatchError(
            f"Study {study.study_name!r} was split on {info['n_samples']} rows, but the "
            f"trainer's dataset has {n}: pass the trainer the study ran."
        )
    if rows is None:
        return np.setdiff1d(np.arange(n), study.selection_indices(n))
    return np.asarray(rows)


def _n_rows(trainer: SupervisedTrainer) -> int:
    """The number of rows of the trainer's dataset (a tuple of tensors, or a Dataset)."""
    data = trainer.dataset[0] if isinstance(trainer.dataset, tuple) else trainer.dataset
    return len(data)
