"""SplitTrial: one split's Optuna trial, with checkpointing and weight transfer at report."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch

from optuna_mto._board import Blackboard, SplitRecord
from optuna_mto._errors import CheckpointError
from optuna_mto._retry import retry_transient
from optuna_mto.checkpoints import CheckpointRef, CheckpointStore
from optuna_mto.transfer import BaseTransferManager, TransferContext, is_better

if TYPE_CHECKING:
    from optuna_mto._splits import BaseSplitter

__all__ = ["EvaluateFn", "ReportResult", "SplitTrial", "TransferEvent"]

_logger = logging.getLogger(__name__)

#: ``evaluate(model, indices) -> score``: the user's metric of ``model`` on the rows
#: ``indices`` of the dataset, in the study's direction.
EvaluateFn = Callable[[torch.nn.Module, np.ndarray], float]

TRANSFER_ATTR_PREFIX = "transfer:"


@dataclasses.dataclass(frozen=True)
class TransferEvent:
    """One transfer attempt, as recorded on the receiving trial.

    Attributes:
        step: Report step of the attempt.
        receiver: Receiving split.
        donor: Donor split.
        donor_trial: Optuna trial number of the donor's run.
        donor_step: Step at which the donor published the weights.
        operator: Label of the candidate that was kept or scored best.
        before: Receiver's own score before the transfer.
        after: Best candidate's score on the receiver's validation set (NaN if skipped).
        accepted: Whether the candidate replaced the receiver's weights.
        reason: Why nothing was tried (``""`` when a candidate was scored).
    """

    step: int
    receiver: int
    donor: int
    donor_trial: int
    donor_step: int
    operator: str
    before: float
    after: float
    accepted: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON form (NaN becomes None)."""
        out = dataclasses.asdict(self)
        for key in ("before", "after"):
            if isinstance(out[key], float) and math.isnan(out[key]):
                out[key] = None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferEvent:
        """Rebuild an event from :meth:`to_dict` output."""
        data = dict(data)
        for key in ("before", "after"):
            data[key] = math.nan if data.get(key) is None else float(data[key])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class ReportResult:
    """What :meth:`SplitTrial.report` did.

    Attributes:
        step: The report step.
        fitness: The split's score after the step (the donor's score when accepted).
        transfer: The transfer attempt, or None when none was made.
        checkpoint: The checkpoint written at this step, or None without a model.
    """

    step: int
    fitness: float
    transfer: TransferEvent | None
    checkpoint: CheckpointRef | None

    @property
    def accepted(self) -> bool:
        """True if a donor's weights replaced the receiver's at this step."""
        return self.transfer is not None and self.transfer.accepted


@dataclasses.dataclass
class _Shared:
    """What every split of one study shares inside one process."""

    storage: optuna.storages.BaseStorage
    study_id: int
    study_name: str
    direction: str
    n_splits: int
    seed: int
    splitter: BaseSplitter
    n_samples: int
    targets: np.ndarray | None
    store: CheckpointStore
    board: Blackboard
    manager: BaseTransferManager
    evaluate: EvaluateFn | None
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def check_compatible(own: dict[str, torch.Tensor], donor: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first tensor whose name or shape differs.

    Args:
        own: The receiver's ``state_dict()``.
        donor: The donor's ``state_dict()``.
    """
    for name in own:
        if name not in donor:
            raise ValueError(
                f"The donor's weights have no tensor {name!r} that the receiver's model has; "
                "every split must use the same architecture."
            )
        own_shape, donor_shape = tuple(own[name].shape), tuple(donor[name].shape)
        if own_shape != donor_shape:
            raise ValueError(
                f"Tensor {name!r} has shape {donor_shape} in the donor but {own_shape} in the "
                "receiver; every split must use the same architecture."
            )
    extra = [name for name in donor if name not in own]
    if extra:
        raise ValueError(
            f"The donor's weights have tensor {extra[0]!r} that the receiver's model lacks; "
            "every split must use the same architecture."
        )


class SplitTrial:
    """The trial object an objective receives: one split of the data, one model.

    Train on :attr:`train_indices`, score on :attr:`valid_indices`, put the model on
    :attr:`device`, and call :meth:`report` after each epoch (or every N batches).
    ``report`` records the intermediate value, checkpoints the model, publishes the
    split's fitness to the other splits, and may replace the model's weights with a
    better split's (a transfer kept only when it improves this split's own
    validation score).

    Example:
        .. code-block:: python

            def objective(trial: optuna_mto.SplitTrial) -> None:
                model = Net().to(trial.device)
                opt = torch.optim.Adam(model.parameters())
                for epoch in range(trial.restore(model, opt), 10):
                    train_one_epoch(model, opt, trial.train_indices)
                    trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
    """

    def __init__(
        self,
        shared: _Shared,
        optuna_trial: optuna.Trial,
        split: int,
        attempt: int = 0,
        device: torch.device | str = "cpu",
        resume_from: SplitRecord | None = None,
    ) -> None:
        self._shared = shared
        self._trial = optuna_trial
        self._split = split
        self._attempt = attempt
        self._device = torch.device(device)
        self._resume_from = resume_from
        self._train, self._valid = shared.splitter.split(shared.n_samples, split, shared.targets)
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: Any = None
        self._tried: set[str] = set()
        self._latest: CheckpointRef | None = None
        self._previous: CheckpointRef | None = None
        self._best: tuple[float, int, CheckpointRef] | None = None
        self._last_step: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def split(self) -> int:
        """Index of this trial's split, in ``[0, n_splits)``."""
        return self._split

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
        return self._device

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
        return self._train

    @property
    def valid_indices(self) -> np.ndarray:
        """Rows of the dataset this split validates on."""
        return self._valid

    @property
    def best_value(self) -> float | None:
        """Best score reported so far (after transfers), or None."""
        return None if self._best is None else self._best[0]

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, valid)`` rows of any split of the study."""
        return self._shared.splitter.split(self._shared.n_samples, split, self._shared.targets)

    def set_user_attr(self, key: str, value: Any) -> None:
        """Set a user attribute on the Optuna trial (shown in optuna-dashboard)."""
        self._trial.set_user_attr(key, value)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: torch.nn.Module, indices: np.ndarray | None = None) -> float:
        """Score ``model`` with the study's evaluate function (default: own validation set)."""
        if self._shared.evaluate is None:
            raise ValueError(
                "No evaluate function: pass optimize(..., evaluate=fn) with "
                "fn(model, indices) -> float, or use optuna_mto.SupervisedTrainer."
            )
        rows = self._valid if indices is None else indices
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(self._shared.evaluate(model, rows))
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ state
    def _capture(self) -> dict[str, Any]:
        assert self._model is not None
        state: dict[str, Any] = {"model": copy.deepcopy(self._model.state_dict())}
        if self._optimizer is not None:
            state["optimizer"] = copy.deepcopy(self._optimizer.state_dict())
        if self._scheduler is not None:
            state["scheduler"] = copy.deepcopy(self._scheduler.state_dict())
        return state

    def _apply(self, state: dict[str, Any]) -> None:
        assert self._model is not None
        self._model.load_state_dict(state["model"])
        if self._optimizer is not None and "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])
        if self._scheduler is not None and "scheduler" in state:
            self._scheduler.load_state_dict(state["scheduler"])

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> int:
        """Resume a retried split from its last good checkpoint.

        Loads model, optimizer, scheduler and RNG state of the previous attempt's
        latest checkpoint (falling back to the one before it, then the best one, if a
        checkpoint is missing or corrupted) and returns the step to continue from.

        Returns:
            The first step still to run: 0 for a fresh split.
        """
        self._model, self._optimizer, self._scheduler = model, optimizer, scheduler
        record = self._resume_from
        if record is None:
            return 0
        store = self._shared.store
        candidates = (record.checkpoint, record.previous_checkpoint, record.best_checkpoint)
        for ref in candidates:
            if ref is None:
                continue
            try:
                state = retry_transient(store.load, ref, map_location=self._device)
            except CheckpointError as err:
                _logger.warning("Split %d: cannot resume from %s: %s", self._split, ref, err)
                self._trial.set_user_attr(f"bad_checkpoint:{ref.artifact_id}", str(err))
                continue
            check_compatible(model.state_dict(), state["model"])
            self._apply(state)
            if "rng" in state:
                _set_rng_state(state["rng"])
            step = int(state["step"])
            self._latest = ref
            self._best = (record.best_fitness, record.best_step, record.best_checkpoint)
            if record.best_step > step:  # the best came later than what we resume from
                self._best = (float(state["fitness"]), step, ref)
            self._last_step = step
            self._carry_history(record.trial_id, step)
            for other in candidates[:2]:
                if other is not None and other not in (ref, self._best[2]):
                    retry_transient(store.remove, other.artifact_id)
            _logger.info("Split %d resumes after step %d.", self._split, step)
            return step + 1
        return 0

    def _carry_history(self, failed_trial_id: int, step: int) -> None:
        """Copy the failed run's curve and transfer log up to ``step`` into this trial."""
        storage = self._trial.storage
        failed = retry_transient(storage.get_trial, failed_trial_id)
        trial_id = self._trial._trial_id
        for past_step, past_value in sorted(failed.intermediate_values.items()):
            if past_step <= step:
                retry_transient(storage.set_trial_intermediate_value, trial_id, past_step,
                                past_value)  # fmt: skip
        for key, value in failed.user_attrs.items():
            if key.startswith(TRANSFER_ATTR_PREFIX) and int(key.split(":")[1]) <= step:
                retry_transient(storage.set_trial_user_attr, trial_id, key, value)
        retry_transient(storage.set_trial_system_attr, trial_id, "mto:resumed_from_step", step)
        retry_transient(self._trial.set_user_attr, "resumed_from_step", step)

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
        """
        if self._shared.stop.is_set():
            raise KeyboardInterrupt("optimize() was interrupted; this split resumes next time")
        value = float(value)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0, but got step={step!r}.")
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"step must increase from one report to the next, but got step={step} after "
                f"step={self._last_step}."
            )
        retry_transient(self._trial.report, value, step)
        self._last_step = step
        if model is None:
            return ReportResult(step, value, None, None)
        self._model, self._optimizer, self._scheduler = model, optimizer, scheduler
        fitness, event = value, None
        if self._shared.manager.should_transfer(step) and self._shared.evaluate is not None:
            event = self._try_transfer(step, value)
            if event is not None and event.accepted:
                fitness = event.after
        ref = self._checkpoint(step, fitness)
        return ReportResult(step, fitness, event, ref)

    def _try_transfer(self, step: int, value: float) -> TransferEvent | None:
        shared = self._shared
        records = retry_transient(shared.board.read)
        others = {k: r.fitness for k, r in records.items() if k != self._split}
        rng = np.random.default_rng([shared.seed, self._split, step])
        context = TransferContext(self._split, step, value, shared.direction, others, rng)
        donor = shared.manager.choose_donor(context)
        if donor is None:
            return None
        record = records[donor]
        if record.checkpoint.artifact_id in self._tried:
            return None  # already scored these exact weights
        self._tried.add(record.checkpoint.artifact_id)

        def event(operator: str, after: float, accepted: bool, reason: str = "") -> TransferEvent:
            return TransferEvent(
                step, self._split, donor, record.trial_number, record.step,
                operator, value, after, accepted, reason,
            )  # fmt: skip

        try:
            donor_state = retry_transient(
                shared.store.load, record.checkpoint, map_location=self._device
            )
        except CheckpointError as err:
            _logger.warning("Split %d skips donor split %d: %s", self._split, donor, err)
            return self._record(event("none", math.nan, False, f"bad checkpoint: {err}"))
        own = self._capture()
        check_compatible(own["model"], donor_state["model"])
        best: tuple[str, float, dict[str, Any]] | None = None
        for label, candidate in shared.manager.candidates(own, donor_state, context):
            self._apply(candidate)
            score = self.evaluate(self._model)  # type: ignore[arg-type]
            if best is None or is_better(score, best[1], shared.direction):
                best = (label, score, candidate)
        if best is None:
            self._apply(own)
            return None
        accepted = shared.manager.accept(value, best[1], shared.direction)
        self._apply(best[2] if accepted else own)
        return self._record(event(best[0], best[1], accepted))

    def _record(self, event: TransferEvent) -> TransferEvent:
        key = f"{TRANSFER_ATTR_PREFIX}{event.step:06d}"
        retry_transient(self._trial.set_user_attr, key, event.to_dict())
        return event

    def _checkpoint(self, step: int, fitness: float) -> CheckpointRef:
        shared = self._shared
        state = self._capture()
        state.update(step=step, fitness=fitness, rng=_rng_state())
        name = f"{shared.study_name}-split{self._split}-s{step}"
        ref = retry_transient(shared.store.save, state, name=name)
        stale = self._previous
        self._previous, self._latest = self._latest, ref
        if self._best is None or is_better(fitness, self._best[0], shared.direction):
            if self._best is not None:
                stale_best = self._best[2]
                if stale_best not in (self._previous, self._latest):
                    retry_transient(shared.store.remove, stale_best.artifact_id)
            self._best = (fitness, step, ref)
        if stale is not None and stale not in (self._best[2], self._previous, self._latest):
            retry_transient(shared.store.remove, stale.artifact_id)
        self._publish(step, fitness, finished=False)
        return ref

    def _publish(self, step: int, fitness: float, *, finished: bool) -> None:
        assert self._latest is not None and self._best is not None
        record = SplitRecord(
            split=self._split,
            trial_id=self._trial._trial_id,
            trial_number=self._trial.number,
            step=step,
            fitness=fitness,
            checkpoint=self._latest,
            previous_checkpoint=self._previous,
            best_fitness=self._best[0],
            best_step=self._best[1],
            best_checkpoint=self._best[2],
            finished=finished,
        )
        retry_transient(self._shared.board.publish, record)

    # ------------------------------------------------------------------ end of split
    def finish(self) -> list[float] | None:
        """Score the split's best weights on every split's validation set.

        Called by ``optimize`` after the objective returns. Leaves the model holding
        the best weights.

        Returns:
            The K cross-split scores, or None if no model or evaluate function exists.
        """
        if self._model is None or self._best is None:
            return None
        best_fitness, best_step, best_ref = self._best
        store = self._shared.store
        try:
            self._apply(retry_transient(store.load, best_ref, map_location=self._device))
        except CheckpointError as err:
            # Keep the weights in memory and make them the exported best, loadable again.
            _logger.warning("Split %d: best checkpoint unusable (%s); using the current "
                            "weights instead.", self._split, err)  # fmt: skip
            state = self._capture()
            name = f"{self._shared.study_name}-split{self._split}-final"
            best_ref = retry_transient(store.save, state, name=name)
            self._best = (best_fitness, best_step, best_ref)
        scores = None
        if self._shared.evaluate is not None:
            scores = [
                self.evaluate(self._model, self.split_indices(j)[1])
                for j in range(self._shared.n_splits)
            ]
        storage, trial_id = self._trial.storage, self._trial._trial_id
        best = {"fitness": best_fitness, "step": best_step, "checkpoint": best_ref.to_dict()}
        retry_transient(storage.set_trial_system_attr, trial_id, "mto:best", best)
        if scores is not None:
            retry_transient(storage.set_trial_system_attr, trial_id, "mto:cross_scores", scores)
            rounded = [round(s, 6) for s in scores]
            retry_transient(self._trial.set_user_attr, "cross_split_scores", rounded)
        self._publish(best_step if self._last_step is None else self._last_step,
                      best_fitness, finished=True)  # fmt: skip
        return scores
