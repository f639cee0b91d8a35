"""One deployable model from the K: ensemble distillation (Hinton et al., 2015).

The ensemble of the K split models is usually the study's best output, but it costs K
times the inference and K files. Distillation trains one fresh model of the same
architecture on all the study's training rows (every split's train and validation
rows, never the selection rows) to match the ensemble's predictions: its averaged class
probabilities for classifiers (softened by a temperature), its mean output for
regression. The student may also see the true labels (``hard_weight``).

:func:`distillation_loss` and ``MTOStudy.teacher_targets`` serve users with their own
training loop; ``MTOStudy.distill`` does it all for a ``SupervisedTrainer`` (both in
:mod:`optuna_mto._study.distill_study`, over :func:`distill_trainer`).
:func:`train_without_teacher` is the fair baseline: the same fresh model, rows and
seeded batch order, trained on the labels alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from optuna_mto._step.hparams import call_with_trial
from optuna_mto._validation import check_int, check_number

__all__ = [
    "Mixer",
    "distill",
    "distill_trainer",
    "distillation_loss",
    "epoch_generator",
    "teacher_targets",
    "train_without_teacher",
]

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def teacher_targets(teacher: nn.Module, inputs: torch.Tensor, task: str) -> torch.Tensor:
    """Return what a student should match on ``inputs``: probabilities or mean outputs.

    Args:
        teacher: The ensemble (``MTOStudy.ensemble``): for classification it returns
            the log of the mean class probabilities, for regression the mean output.
        inputs: A batch of inputs on the teacher's device.
        task: ``"classification"`` or ``"regression"``.
    """
    was_training = teacher.training
    teacher.eval()
    with torch.no_grad():
        out = teacher(inputs)
    teacher.train(was_training)
    return out.exp() if task == "classification" else out


def distillation_loss(
    student_output: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The loss of a student's output against the teacher's targets.

    Classification: the KL divergence from the teacher's probabilities, both softened by
    ``temperature``, times ``temperature**2`` (so its gradients keep their scale, as in
    Hinton et al.). Regression: the mean squared error to the teacher's mean output.

    Args:
        student_output: The student's logits (classification) or predictions.
        targets: :func:`teacher_targets` of the same inputs.
        task: ``"classification"`` or ``"regression"``.
        temperature: Softening of both distributions (classification only).
    """
    if task == "regression":
        return F.mse_loss(student_output, targets.reshape(student_output.shape))
    soft = targets.clamp_min(torch.finfo(targets.dtype).tiny).log() / temperature
    soft = soft.log_softmax(dim=1)
    student = (student_output / temperature).log_softmax(dim=1)
    kl = F.kl_div(student, soft, log_target=True, reduction="batchmean")
    return kl * temperature**2


def distill(
    teacher: nn.Module,
    student: nn.Module,
    batches: Batches,
    *,
    task: str,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    mixup: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Train ``student`` to match ``teacher`` on the batches; return it in eval mode.

    With ``mixup > 0`` each batch is first mixed with a shuffled copy of itself,
    ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(mixup, mixup)``, and the teacher
    labels the mixed inputs ("function matching", Beyer et al., CVPR 2022): the student
    learns the teacher's function between the training rows too, where the teacher's
    answers carry more than the labels do. The true labels, if weighted, are mixed alike.

    Args:
        teacher: The ensemble, on the student's device.
        student: A fresh model of the same architecture (or any other).
        batches: ``batches(epoch)`` yields ``(inputs, labels)`` for one epoch.
        task: ``"classification"`` or ``"regression"``.
        epochs: Passes over the batches.
        optimizer: The student's optimizer.
        temperature: Softening of the class distributions.
        hard_weight: Weight of the loss on the true labels (0: the teacher alone).
        hard_loss: That loss (default: cross-entropy or MSE by task).
        mixup: The Beta distribution's parameter for mixing inputs (0: no mixing).
        seed: Seeds the mixing (weights and partners).
    """
    check_int("epochs", epochs, 1)
    check_number("temperature", temperature, 0, low_open=True)
    check_number("hard_weight", hard_weight, 0)
    check_number("mixup", mixup, 0)
    if hard_loss is None:
        hard_loss = F.cross_entropy if task == "classification" else F.mse_loss
    device = next(student.parameters()).device
    mixer = Mixer(mixup, seed)
    student.train()
    for epoch in range(epochs):
        for inputs, labels in batches(epoch):
            inputs, lam, perm = mixer(inputs.to(device))
            labels = labels.to(device)
            targets = teacher_targets(teacher, inputs, task)
            output = student(inputs)
            loss = distillation_loss(output, targets, task, temperature)
            if hard_weight:
                loss = loss + hard_weight * mixer.loss(hard_loss, output, labels, lam, perm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


class Mixer:
    """Mixup of a batch with a shuffled copy of itself (Zhang et al., ICLR 2018), seeded.

    Args:
        alpha: The Beta distribution's parameter; 0 leaves every batch as it is.
        seed: Seeds the mixing weights and partners.
    """

    def __init__(self, alpha: float, seed: int) -> None:
        self.alpha = float(alpha)
        self._rng = np.random.default_rng([int(seed), 1_000_033])

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """Return the mixed batch, its weight ``lam`` and the partners' order."""
        if not self.alpha:
            return inputs, 1.0, None
        if not torch.is_floating_point(inputs):
            raise TypeError(
                f"mixup={self.alpha} mixes inputs, but the batch's inputs are {inputs.dtype} "
                "(not floating point: token ids or labels cannot be averaged). Use mixup=0."
            )
        lam = float(self._rng.beta(self.alpha, self.alpha))
        perm = torch.as_tensor(self._rng.permutation(len(inputs)), device=inputs.device)
        return lam * inputs + (1 - lam) * inputs[perm], lam, perm

    @staticmethod
    def loss(
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        output: torch.Tensor,
        labels: torch.Tensor,
        lam: float,
        perm: torch.Tensor | None,
    ) -> torch.Tensor:
        """The loss on the mixed batch's labels: both partners' losses, weighted alike."""
        if perm is None:
            return loss_fn(output, labels)
        return lam * loss_fn(output, labels) + (1 - lam) * loss_fn(output, labels[perm])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The seeded generator of one epoch's batch order for a study-wide model.

    Shared by the distilled student and its no-teacher baseline (so both see the same
    minibatches); distinct from every split's own order (the ``1_000_003`` in place of
    the split index).
    """
    state = np.random.SeedSequence([int(seed), 1_000_003, int(epoch)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def distill_trainer(
    teacher: nn.Module,
    trainer: Any,
    rows: np.ndarray,
    *,
    task: str,
    epochs: int | None = None,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    mixup: float = 0.0,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Distil ``teacher`` into a fresh model of a ``SupervisedTrainer``'s architecture.

    The student is built and optimized as the trainer builds and optimizes a split's
    model (its ``model_fn``, ``optimizer_fn``, batch size, seed; ``epochs`` defaults to
    the trainer's) and trained on ``rows`` in the order of :func:`epoch_generator`,
    the mixing (``mixup``, see :func:`distill`) seeded by the trainer's seed.
    """
    student = trainer.build_model(-1, device)
    optimizer = call_with_trial(trainer.optimizer_fn, (student.parameters(),), None)

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return trainer._batches(rows, trainer.batch_size, epoch_generator(trainer.seed, epoch))

    hard_loss = trainer.loss_fn if hard_weight else None
    return distill(
        teacher.to(device), student, batches, task=task,
        epochs=trainer.epochs if epochs is None else epochs,
        optimizer=optimizer, temperature=temperature, hard_weight=hard_weight,
        hard_loss=hard_loss, mixup=mixup, seed=trainer.seed,
    )  # fmt: skip


def train_without_teacher(
    trainer: Any,
    rows: np.ndarray,
    *,
    epochs: int | None = None,
    mixup: float = 0.0,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The no-teacher baseline of :func:`distill_trainer`: the labels alone.

    The same fresh model (``trainer.build_model(-1)``), optimizer, rows, seeded batch
    order and mixing (``mixup``: the labels mixed as the inputs are) as the distilled
    student, trained with the trainer's own loss; in eval mode.
    """
    epochs = trainer.epochs if epochs is None else epochs
    check_int("epochs", epochs, 1)
    check_number("mixup", mixup, 0)
    model = trainer.build_model(-1, device)
    optimizer = call_with_trial(trainer.optimizer_fn, (model.parameters(),), None)
    mixer = Mixer(mixup, trainer.seed)
    for epoch in range(epochs):
        generator = epoch_generator(trainer.seed, epoch)
        if not mixup:
            trainer.train_epoch(model, optimizer, rows, generator)
            continue
        model.train()
        for inputs, labels in trainer._batches(rows, trainer.batch_size, generator):
            inputs, lam, perm = mixer(inputs.to(device))
            loss = mixer.loss(trainer.loss_fn, model(inputs), labels.to(device), lam, perm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()
