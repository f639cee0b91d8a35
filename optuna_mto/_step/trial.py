"""SplitTrial: the trial object an objective receives (a thin facade over the report pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import torch

from optuna_mto._step.arch import check_architecture
from optuna_mto._step.board import SplitRecord
from optuna_mto._step.events import ReportResult
from optuna_mto._step.finish import finish_pruned, finish_split
from optuna_mto._step.handle import Shared, SplitHandle
from optuna_mto._step.hparams import HyperparamState
from optuna_mto._step.ledger import CheckpointLedger
from optuna_mto._step.report import report_step
from optuna_mto._step.resume import resume
from optuna_mto._step.strategy_view import StrategyView
from optuna_mto._step.suggest import OptunaTrialMethods
from optuna_mto._storage.optuna_internals import trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import CURRENT_HPARAMS_ATTR, HPARAMS_SOURCE_ATTR
from optuna_mto._validation import check_finite_score

__all__ = ["SplitTrial"]


class SplitTrial(OptunaTrialMethods, StrategyView):
    """The trial object an objective receives: one split of the data, one model.

    Train on :attr:`train_indices`, score on :attr:`valid_indices`, put the model on
    :attr:`device`, and call :meth:`report` after each epoch (or every N batches).
    ``report`` records the intermediate value, checkpoints the model, publishes the
    split's fitness to the other splits, and may replace the model's weights with a
    better split's (a transfer kept only when it improves this split's own
    validation score). A strategy may keep companion models beside yours between
    reports (:attr:`companions`): train them after each epoch with
    :meth:`train_companions`.

    Under ``torchrun`` every rank runs the objective on the same split: wrap the model
    in DDP, shard ``train_indices`` with a ``DistributedSampler``, and call ``restore``,
    ``report``, ``evaluate`` and ``suggest_*`` on every rank. Rank 0 answers them and
    the others get the same answers and rank 0's weights (``examples/ddp_objective.py``,
    :mod:`optuna_mto._workers.distributed`).

    Example:
        .. code-block:: python

            def objective(trial: optuna_mto.SplitTrial) -> None:
                model = Net().to(trial.device)
                opt = torch.optim.Adam(model.parameters())
                for epoch in range(trial.restore(model, opt), 10):
                    train_one_epoch(model, opt, trial.train_indices)
                    trial.train_companions(  # e.g. AdaptiveTransfer's explorer
                        lambda m, o: train_one_epoch(m, o, trial.train_indices))
                    trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
    """

    def __init__(
        self,
        shared: Shared,
        optuna_trial: optuna.Trial,
        split: int,
        attempt: int = 0,
        device: torch.device | str = "cpu",
        resume_from: SplitRecord | None = None,
        report_hooks: Sequence[Any] = (),
    ) -> None:
        self._shared = shared
        self._trial = optuna_trial
        self._attempt = attempt
        self._resume_from = resume_from
        carried = optuna_trial.user_attrs if resume_from is not None else {}
        hparams = HyperparamState(
            optuna_trial, split, carried.get(CURRENT_HPARAMS_ATTR), carried.get(HPARAMS_SOURCE_ATTR)
        )
        self._handle = SplitHandle(shared, optuna_trial, split, torch.device(device), hparams)
        identity = (split, trial_id_of(optuna_trial), optuna_trial.number)
        self._ledger = CheckpointLedger(
            shared.store, shared.board, identity, shared.direction, shared.study_name
        )
        self._last_step: int | None = None
        self._reports = 0  # reports made by this run (a resumed split starts again at 0)
        self._transfer_steps = 0  # reports of this run with a model at a transfer step
        self.selection_score: float | None = None
        self._report_hooks = [h for h in report_hooks if hasattr(h, "on_report")]

    # ------------------------------------------------------------------ properties
    @property
    def split(self) -> int:
        """Index of this trial's split, in ``[0, n_splits)``."""
        return self._handle.split

    @property
    def n_splits(self) -> int:
        """K, the number of splits of the study."""
        return self._shared.n_splits

    @property
    def attempt(self) -> int:
        """0 for the first run of the split, n for its n-th retry."""
        return self._attempt

    @property
    def number(self) -> int:
        """The Optuna trial number."""
        return self._trial.number

    @property
    def device(self) -> torch.device:
        """The device this split's model should live on."""
        return self._handle.device

    @property
    def optuna_trial(self) -> optuna.Trial:
        """The underlying :class:`optuna.Trial` (for ``suggest_*`` and user attrs)."""
        return self._trial

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``."""
        return self._shared.direction

    @property
    def train_indices(self) -> np.ndarray:
        """Rows of the dataset this split trains on."""
        return self._handle.train_indices

    @property
    def valid_indices(self) -> np.ndarray:
        """Rows of the dataset this split validates on."""
        return self._handle.valid_indices

    @property
    def best_value(self) -> float | None:
        """Best score reported so far (after transfers), or None."""
        return None if self._ledger.best is None else self._ledger.best[0]

    @property
    def lineage(self) -> list[int]:
        """Splits whose training data shaped the current weights (own and inherited)."""
        return list(self._handle.lineage)

    @property
    def resumed_at(self) -> tuple[int, float] | None:
        """``(step, fitness)`` of the checkpoint this run resumed from (None if fresh).

        A worker killed right after checkpointing a step never reported it to trackers;
        they log this point when a resumed run first reports.
        """
        return self._ledger.resumed_at

    @property
    def n_reports(self) -> int:
        """Reports made by this run of the split so far (0 until the first ``report``)."""
        return self._reports

    def set_total_steps(self, total_steps: int) -> None:
        """Tell how many steps this split will report (shown in the progress view)."""
        self._ledger.total_steps = int(total_steps)

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, valid)`` rows of any split of the study."""
        return self._shared.plan.split(split)

    def set_user_attr(self, key: str, value: Any) -> None:
        """Set a user attribute on the Optuna trial (shown in optuna-dashboard)."""
        retry_transient(self._trial.set_user_attr, key, value)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: torch.nn.Module, indices: np.ndarray | None = None) -> float:
        """Score ``model`` with the study's evaluate function (default: own validation set).

        Raises:
            NonFiniteScoreError: If the score is NaN or infinite (training diverged).
        """
        score, last = self._handle.evaluate(model, indices), self._last_step
        when = "before the first report" if last is None else f"after step {last}"
        return check_finite_score(score, self.split, f"the score evaluate returned {when}")

    # ------------------------------------------------------------------ resume
    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> int:
        """Resume a retried split from its last good checkpoint.

        Loads model, optimizer, scheduler and RNG state, the lineage, hyperparameters and
        the transfer strategy's state of the previous attempt's latest checkpoint
        (falling back to the one before it, then the best one, if a checkpoint is
        missing or corrupted), and carries the earlier curve and transfer log into this
        trial.

        Returns:
            The first step still to run: 0 for a fresh split.
        """
        self._bind(model, optimizer, scheduler)
        if self._resume_from is None:
            return 0
        step = resume(self._handle, self._ledger, self._resume_from, self._shared,
                      self._trial)  # fmt: skip
        if step is None:
            return 0
        self._last_step = step
        return step + 1

    def _bind(self, model: Any, optimizer: Any, scheduler: Any) -> None:
        handle = self._handle
        handle.model, handle.optimizer, handle.scheduler = model, optimizer, scheduler

    # ------------------------------------------------------------------ report
    def report(
        self,
        value: float,
        step: int,
        *,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> ReportResult:
        """Report this split's validation score at ``step``, checkpoint, and maybe transfer.

        Args:
            value: The model's score on :attr:`valid_indices` (in the study's direction).
            step: The step (epoch or iteration); increasing from one call to the next.
            model: The model. Without it only the intermediate value is recorded.
            optimizer: Its optimizer, whose state is checkpointed and transferred.
            scheduler: Its LR scheduler, likewise.

        Returns:
            What happened at this step; :attr:`ReportResult.accepted` tells whether the
            model's weights (and optimizer state) were replaced by a donor's.

        Raises:
            NonFiniteScoreError: If ``value`` is NaN or infinite (training diverged).
        """
        if self._shared.stop.is_set():
            raise KeyboardInterrupt("optimize() was interrupted; this split resumes next time")
        value = float(value)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0, but got step={step!r}.")
        step = int(step)
        check_finite_score(value, self.split, f"the value reported at step {step}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"step must increase from one report to the next, but got step={step} after "
                f"step={self._last_step}."
            )
        if model is not None:
            self._bind(model, optimizer, scheduler)
            if self._ledger.arch is None:  # this run's first model: same layers as the others?
                self._ledger.arch = check_architecture(self._shared, self.split, model)
            self._transfer_steps += self._shared.manager.should_transfer(step)
        self._last_step = step
        self._reports += 1
        result = report_step(self._shared, self._handle, self._ledger, self._trial, value, step,
                             with_model=model is not None)  # fmt: skip
        for hook in self._report_hooks:
            hook.on_report(self, result)
        return result

    # ------------------------------------------------------------------ end of split
    def finish(self) -> list[float] | None:
        """Score the split's best weights on every split's validation set.

        Called by ``optimize`` after the objective returns. Leaves the model holding
        the best weights. Also records which share of each validation set those
        weights have trained on (counting inherited weights), and their score on the
        held-out selection set when the study has one.

        Warns (UserWarning) if the study transfers but no report of the split was at a
        transfer step (its ``warmup`` lies beyond the split's last step), unless the split
        declared its steps (:meth:`set_total_steps`): ``optimize`` checks a
        :class:`~optuna_mto.SupervisedTrainer`'s epochs before any split starts.

        Returns:
            The K cross-split scores, or None if no model or evaluate function exists.
        """
        scores, self.selection_score = finish_split(
            self._shared, self._handle, self._ledger, self._trial
        )
        ledger, last = self._ledger, self._last_step
        if self._transfer_steps or ledger.arch is None or last is None:
            return scores  # it reached a transfer step, or reported no model
        fresh = ledger.resumed_at is None and ledger.total_steps is None
        if fresh and self._shared.evaluate is not None:
            self._shared.manager.warn_if_never_transfers(last + 1)
        return scores

    def finish_pruned(self) -> None:
        """End a split the pruner stopped (the objective raised :class:`optuna.TrialPruned`).

        Called by ``optimize``. The split is no candidate: it gets no cross-split
        scores, its record is marked pruned (so no split picks it as a donor from now
        on) and every checkpoint of its run is removed.
        """
        finish_pruned(self._shared, self._handle, self._ledger, self._trial, self._last_step)
