"""SupervisedTrainer: a ready objective for ordinary supervised PyTorch training."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import optuna
import torch
from torch import nn

from optuna_mto._step.hparams import call_with_trial, takes_trial
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.schema import EXPLORER_EPOCHS_ATTR, TRAIN_EPOCHS_ATTR
from optuna_mto._trainer_checks import (
    as_targets,
    check_first_batch,
    check_targets,
    label_targets,
    task_of,
)
from optuna_mto._validation import check_choice, check_int
from optuna_mto._workers import distributed as _distributed
from optuna_mto.transfer import train_companions

__all__ = ["SupervisedTrainer"]

_init_lock = threading.Lock()
_METRICS = {"accuracy": "maximize", "loss": "minimize"}


def _default_optimizer(params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class SupervisedTrainer:
    """Train one model per split with minibatch SGD; pass it to ``MTOStudy.optimize``.

    It is the objective, the evaluate function and the dataset in one picklable
    object, so ``study.optimize(trainer, n_jobs=K)`` can run the splits in processes
    (give it module-level factories, not lambdas, for that).

    Each factory may also take the split trial as its last argument, to draw
    hyperparameters from the study's sampler: ``model_fn(trial)``,
    ``optimizer_fn(params, trial)``, ``scheduler_fn(optimizer, trial)``, e.g.
    ``lambda params, trial: SGD(params, lr=trial.suggest_float("lr", 1e-3, 0.3, log=True))``
    (a module-level function for process workers).

    Args:
        model_fn: Builds a fresh model (same architecture for every split).
        dataset: An ``(X, y)`` pair of tensors (fast path: batches are sliced
            directly) or any ``torch.utils.data.Dataset`` of ``(input, label)`` pairs.
        optimizer_fn: ``optimizer_fn(model.parameters())`` or
            ``optimizer_fn(model.parameters(), trial)``; default Adam, lr 1e-3.
        scheduler_fn: Optional ``scheduler_fn(optimizer)`` (or ``(optimizer, trial)``),
            stepped once per epoch; its state is checkpointed and transferred with the
            weights.
        loss_fn: Training loss; default cross-entropy.
        metric: How a model is scored on some rows: ``"accuracy"`` (maximize) or
            ``"loss"`` (minimize). Each epoch reports its score on the validation set
            as the trial's value.
        epochs: Epochs per split; one report (and transfer opportunity) per epoch.
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size.
        num_workers: DataLoader workers (Dataset inputs only).
        seed: Seed of model initialisation and shuffling, combined with the split index.
        same_init: Initialise every split's model identically (helps weight averaging).
        check_first_batch: Before any split starts, ``optimize`` runs one batch of 8 rows
            through a fresh model on the CPU (forward, loss, backward) and reports a
            wrong input size or output shape once, clearly (see :meth:`check_inputs`).
            Turn off for models that only run on a GPU.
        prune: After each epoch's report, ask the study's pruner
            (``trial.should_prune()``) and end the split as PRUNED when it says so.

    Raises:
        ValueError: For targets that do not suit the metric or the loss (text labels,
            float labels with ``metric="accuracy"``, integer targets for a regression
            loss, a wrong shape), naming the value and the fix.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        dataset: tuple[torch.Tensor, torch.Tensor] | torch.utils.data.Dataset,
        *,
        optimizer_fn: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
        scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None = None,
        loss_fn: nn.Module | None = None,
        metric: str = "accuracy",
        epochs: int = 10,
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        seed: int = 0,
        same_init: bool = False,
        check_first_batch: bool = True,
        prune: bool = False,
    ) -> None:
        check_choice("metric", metric, tuple(_METRICS))
        check_int("epochs", epochs, 1)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        if isinstance(dataset, tuple):
            if len(dataset) != 2 or len(dataset[0]) != len(dataset[1]):
                raise ValueError(
                    "dataset must be an (X, y) pair of equal length, but got lengths "
                    f"{[len(d) for d in dataset]}."
                )
            dataset = (torch.as_tensor(dataset[0]), as_targets(dataset[1]))
        loss_fn = loss_fn or nn.CrossEntropyLoss()
        if isinstance(dataset, tuple):
            check_targets(dataset[1], metric, loss_fn)
        elif getattr(dataset, "targets", None) is not None:
            check_targets(as_targets(dataset.targets), metric, loss_fn)
        self.model_fn = model_fn
        self.dataset = dataset
        self.optimizer_fn = optimizer_fn or _default_optimizer
        self.scheduler_fn = scheduler_fn
        self.loss_fn = loss_fn
        self.check_first_batch = check_first_batch
        self.metric = metric
        self.epochs = epochs
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.same_init = same_init
        self.prune = bool(prune)

    @property
    def direction(self) -> str:
        """The study direction the metric needs."""
        return _METRICS[self.metric]

    @property
    def task(self) -> str | None:
        """``"classification"`` or ``"regression"`` (from metric and loss; None if unsaid).

        ``optimize`` stores it in a study created without ``task``: it sets how the
        study's ensemble combines the models.
        """
        return task_of(self.metric, self.loss_fn)

    @property
    def targets(self) -> np.ndarray | None:
        """Per-row labels, when the dataset exposes them (stratified splits, fingerprint).

        ``(N,)`` targets, or ``(N, 1)`` ones flattened; None for wider targets.
        """
        if isinstance(self.dataset, tuple):
            return label_targets(self.dataset[1])
        labels = getattr(self.dataset, "targets", None)
        return None if labels is None else np.asarray(labels)

    def check_inputs(self) -> None:
        """Train one batch of up to 8 rows on a fresh model on the CPU, checking shapes.

        ``optimize`` calls it before any split starts (unless ``check_first_batch`` is
        False), so that an input size the model does not take, or an output that does
        not fit the targets, is reported once, with the shapes and the fix, instead of
        failing every split and every retry.

        Skipped when the model factory takes the trial: its architecture then depends on
        values the study's sampler draws for each split.

        Raises:
            ValueError: Naming the shapes involved and the fix.
        """
        if not self.check_first_batch or takes_trial(self.model_fn, 0):
            return
        n = min(8, len(self.dataset if not isinstance(self.dataset, tuple) else self.dataset[0]))
        if n == 0:
            return
        if isinstance(self.dataset, tuple):
            inputs, labels = self.dataset[0][:n].cpu(), self.dataset[1][:n].cpu()
            all_labels: torch.Tensor | None = self.dataset[1]
        else:
            batch = torch.utils.data.default_collate([self.dataset[i] for i in range(n)])
            inputs, labels = batch[0], as_targets(batch[1])
            check_targets(labels, self.metric, self.loss_fn)
            targets = getattr(self.dataset, "targets", None)
            all_labels = None if targets is None else as_targets(targets)
        # Targets that passed check_targets are class indices exactly when not float.
        class_labels = labels if all_labels is None else all_labels
        n_classes = None
        if not class_labels.is_floating_point() and len(class_labels):
            n_classes = int(class_labels.max()) + 1
        model = self.build_model(0, "cpu")
        model.train()
        check_first_batch(model, inputs, labels, self.metric, self.loss_fn, n_classes)

    def build_model(
        self, split: int, device: torch.device | str = "cpu", trial: SplitTrial | None = None
    ) -> nn.Module:
        """Build the model of ``split`` with a seeded, reproducible initialisation."""
        with _init_lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if self.same_init else self.seed * 100_003 + split)
            model = call_with_trial(self.model_fn, (), trial)
        return model.to(device)

    def _batches(
        self, indices: np.ndarray, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        if generator is not None:
            rows = _distributed.shard(rows[torch.randperm(len(rows), generator=generator)])
        if isinstance(self.dataset, tuple):
            x, y = self.dataset
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                yield x[chunk], y[chunk]
            return
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, rows.tolist()),
            batch_size=batch_size,
            num_workers=self.num_workers,
        )
        yield from loader

    def train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        indices: np.ndarray,
        generator: torch.Generator,
    ) -> float:
        """Run one epoch over ``indices``; return the mean training loss."""
        device = next(model.parameters()).device
        model.train()
        # Summed on the device: no host synchronisation per batch on a GPU.
        total, count = torch.zeros((), device=device), 0
        for inputs, labels in self._batches(indices, self.batch_size, generator):
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(labels)
            count += len(labels)
        return float(total) / max(count, 1)

    def evaluate(self, model: nn.Module, indices: np.ndarray) -> float:
        """Return the score of ``model`` on the rows ``indices``: its metric there."""
        if self.metric == "accuracy":
            return self._mean_over_rows(
                model, indices, lambda outputs, labels: (outputs.argmax(dim=1) == labels).sum()
            )
        return self.evaluate_loss(model, indices)

    def evaluate_loss(self, model: nn.Module, indices: np.ndarray) -> float:
        """Return the mean ``loss_fn`` of ``model`` on the rows ``indices`` (lower is better).

        The transfer criterion of ``AdaptiveTransfer(criterion="loss")``.
        """
        return self._mean_over_rows(
            model,
            indices,
            lambda outputs, labels: self.loss_fn(outputs, labels).double() * len(labels),
        )

    def _mean_over_rows(
        self,
        model: nn.Module,
        indices: np.ndarray,
        batch_total: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> float:
        """Sum ``batch_total(outputs, labels)`` over the rows in eval mode; divide by rows.

        Sums stay on the model's device (no host sync per batch); NaN for no rows.
        """
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        with torch.no_grad():
            for inputs, labels in self._batches(indices, self.eval_batch_size, None):
                inputs, labels = inputs.to(device), labels.to(device)
                total += batch_total(model(inputs), labels)
                count += len(labels)
        model.train(was_training)
        return float(total) / count if count else float("nan")

    def __call__(self, trial: SplitTrial) -> None:
        """Train split ``trial.split``, reporting the validation metric every epoch.

        Records the training compute as user attributes ``train_epochs`` (of the split's
        own model) and ``explorer_epochs`` (extra epochs spent on the strategy's companion
        models, such as AMTO's explorers, trained after each epoch of the own model).
        """
        companion_epochs = 0  # local: one trainer may serve several splits in threads
        trial.set_total_steps(self.epochs)
        model = self.build_model(trial.split, trial.device, trial)
        optimizer = call_with_trial(self.optimizer_fn, (model.parameters(),), trial)
        scheduler = (
            call_with_trial(self.scheduler_fn, (optimizer,), trial) if self.scheduler_fn else None
        )
        for epoch in range(trial.restore(model, optimizer, scheduler), self.epochs):
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, trial.split, epoch]).generate_state(1)[0])
            )
            self.train_epoch(model, optimizer, trial.train_indices, generator)
            if scheduler is not None:
                scheduler.step()
            companion_epochs += train_companions(  # models the strategy keeps beside it
                trial.companions, lambda m, o, g: self.train_epoch(m, o, trial.train_indices, g),
                generator,
            )  # fmt: skip
            value = self.evaluate(model, trial.valid_indices)
            trial.report(value, epoch, model=model, optimizer=optimizer, scheduler=scheduler)
            if self.prune and trial.should_prune():
                raise optuna.TrialPruned(f"split {trial.split} pruned after epoch {epoch}")
        trial.set_user_attr(TRAIN_EPOCHS_ATTR, self.epochs)
        trial.set_user_attr(EXPLORER_EPOCHS_ATTR, companion_epochs)
