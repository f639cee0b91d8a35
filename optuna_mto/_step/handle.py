"""What a transfer strategy acts through: one running split's model, data and records.

A strategy (``transfer/``) never touches storage or Optuna itself: at a report step it
gets a :class:`SplitHandle` and asks it to load a donor's checkpoint, score a model,
apply or discard a candidate state, and record what happened.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch

from optuna_mto._data.plan import SplitPlan
from optuna_mto._errors import CheckpointError
from optuna_mto._logging import get_logger
from optuna_mto._step.board import Blackboard, SplitRecord
from optuna_mto._step.events import TransferEvent
from optuna_mto._step.hparams import HyperparamState
from optuna_mto._step.state import apply_state, capture_state, check_compatible, unwrap_model
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import CHECKPOINT_MODEL, TRANSFER_ATTR_PREFIX, step_key
from optuna_mto._workers.split_trials import transfer_tried
from optuna_mto.checkpoints import CheckpointStore

if TYPE_CHECKING:
    from optuna_mto.transfer import BaseTransferManager, Companion

__all__ = ["EvaluateFn", "Shared", "SplitHandle"]

_logger = get_logger(__name__)
#: Reads of a donor's checkpoint, following its newer records when one is gone.
_DONOR_READS = 3

#: ``evaluate(model, indices) -> score``: the user's metric of ``model`` on the rows
#: ``indices`` of the dataset, in the study's direction.
EvaluateFn = Callable[[torch.nn.Module, np.ndarray], float]


@dataclasses.dataclass
class Shared:
    """What every split of one study shares inside one process."""

    study_name: str
    direction: str
    n_splits: int
    seed: int
    plan: SplitPlan
    store: CheckpointStore
    board: Blackboard
    manager: BaseTransferManager
    evaluate: EvaluateFn | None
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: ``loss(model, indices) -> float`` (lower is better): the objective's
    #: ``evaluate_loss``, for managers that judge on the validation loss (:meth:`judge`).
    loss: EvaluateFn | None = None


class SplitHandle:
    """One running split as a strategy sees it.

    Attributes:
        split: The split's index.
        n_splits: K.
        direction: ``"maximize"`` or ``"minimize"`` (of the study's metric).
        device: Where the split's model lives.
        valid_indices: The split's own validation rows.
        lineage: Splits whose training data shaped the current weights.
        state: The strategy's own per-split state: plain Python values (str/int keys),
            saved in every checkpoint and given back to a resumed split.
        companions: Models the strategy keeps beside the split's, by name
            (:class:`~optuna_mto.transfer.Companion`): it creates, judges and drops
            them in its hooks; the objective trains those with ``train=True`` between
            reports (``trial.companions``).
        tried_checkpoints: Artifact ids of donor weights already scored by this run.
        hparams: The split's hyperparameter values and their history.
    """

    def __init__(
        self,
        shared: Shared,
        trial: optuna.Trial,
        split: int,
        device: torch.device,
        hparams: HyperparamState,
    ) -> None:
        self._shared = shared
        self._trial = trial
        self.split = split
        self.n_splits = shared.n_splits
        self.direction = shared.direction
        self.device = device
        self.train_indices, self.valid_indices = shared.plan.split(split)
        self.lineage: list[int] = [split]
        self.state: dict[str, Any] = {}
        self.companions: dict[str, Companion] = {}
        self.tried_checkpoints: set[str] = set()
        self.hparams = hparams
        self.tried = 0
        self.accepted = 0
        self.model: torch.nn.Module | None = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self._rescored: tuple[TransferEvent, float] | None = None

    @property
    def seed(self) -> int:
        """The study's seed."""
        return self._shared.seed

    @property
    def plan(self) -> SplitPlan:
        """Every split's rows, and the selection set."""
        return self._shared.plan

    @property
    def trial_number(self) -> int:
        """The Optuna trial number of this run."""
        return self._trial.number

    # ------------------------------------------------------------------ scoring
    def evaluate(
        self, model: torch.nn.Module | None = None, rows: np.ndarray | None = None
    ) -> float:
        """Score ``model`` (default: the split's own) with the study's evaluate function.

        Args:
            model: The model to score; default the split's model.
            rows: Dataset rows to score on; default the split's validation rows.
        """
        evaluate = self._shared.evaluate
        if evaluate is None:
            raise ValueError(
                "No evaluate function: pass optimize(..., evaluate=fn) with "
                "fn(model, indices) -> float, or use optuna_mto.SupervisedTrainer."
            )
        return _scored(evaluate, self.model if model is None else model,
                       self.valid_indices if rows is None else rows)  # fmt: skip

    def fitness_after(self, value: float, event: TransferEvent | None) -> float:
        """The split's fitness after a transfer step whose outcome is ``event``.

        ``value`` if nothing was kept; else the kept candidate's score when it was judged
        on the own validation rows, or the new weights scored once (cached per event).
        """
        if event is None or not event.accepted:
            return value
        if event.judged_on == "own":
            return event.after
        if self._rescored is None or self._rescored[0] is not event:
            self._rescored = (event, self.evaluate())
        return self._rescored[1]

    def judge(self, model: torch.nn.Module, criterion: str = "metric") -> tuple[float, str]:
        """Score ``model`` on its own validation rows by ``criterion``.

        Returns:
            The score and its direction: the study's for ``"metric"``, ``"minimize"``
            for ``"loss"`` (the objective's ``evaluate_loss``).
        """
        if criterion != "loss":
            return self.evaluate(model), self.direction
        loss = self._shared.loss
        if loss is None:
            raise ValueError(
                "The transfer manager judges on criterion='loss', but the objective has no "
                "evaluate_loss(model, indices) method; use optuna_mto.SupervisedTrainer or "
                "give the objective one, or use criterion='metric'."
            )
        return _scored(loss, model, self.valid_indices), "minimize"

    def gate_rows(self, gate: str, donor_lineage: list[int]) -> np.ndarray | None:
        """Rows a candidate from a donor of ``donor_lineage`` is judged on.

        None for the own validation set (``"own"``); the held-out selection set for
        ``"selection"``; for ``"unseen"``, the own validation rows that neither this
        model's nor the donor's lineage trained on (may be empty).
        """
        plan = self._shared.plan
        if gate == "selection":
            if not len(plan.selection):
                raise ValueError(
                    "The transfer manager judges candidates on gate='selection', but the study "
                    "has no selection set: create it with selection_fraction > 0 (e.g. 0.1), "
                    "or use gate='unseen'."
                )
            return plan.selection
        if gate != "unseen":
            return None
        seen = np.zeros(plan.n_samples, dtype=bool)
        for source in set(donor_lineage) | set(self.lineage):
            seen[plan.split(source)[0]] = True
        return self.valid_indices[~seen[self.valid_indices]]

    # ------------------------------------------------------------------ states
    def capture(self, clone: bool = True) -> dict[str, Any]:
        """Return the model's (and optimizer's, scheduler's) state."""
        assert self.model is not None
        return capture_state(self.model, self.optimizer, self.scheduler, clone=clone)

    def apply(self, state: dict[str, Any]) -> None:
        """Load ``state`` (from :meth:`capture` or a checkpoint) into the split's objects."""
        assert self.model is not None
        apply_state(state, self.model, self.optimizer, self.scheduler)

    def load_donor(self, record: SplitRecord) -> dict[str, Any] | str:
        """Return the donor's checkpoint content, or the reason it cannot be used.

        A donor that ended (finished or pruned) or moved on since ``record`` was read
        may have removed the checkpoint it names, after publishing a newer record: the
        donor's record is then read again, and its newer checkpoint loaded (a pruned
        donor gives nothing, quietly). Only a checkpoint that its donor still names and
        that cannot be read is a warning.
        """
        state = self._read_donor(record)
        if isinstance(state, str):
            return state
        assert self.model is not None
        check_compatible(unwrap_model(self.model).state_dict(), state[CHECKPOINT_MODEL])
        return state

    def _read_donor(self, record: SplitRecord) -> dict[str, Any] | str:
        """Load the checkpoint ``record`` names, following the donor's newer records."""
        for _ in range(_DONOR_READS):
            try:
                return retry_transient(
                    self._shared.store.load, record.checkpoint, map_location=self.device
                )
            except CheckpointError as err:
                error = err
            newer = retry_transient(self._shared.board.read).get(record.split, record)
            if newer.pruned:
                return f"donor split {record.split} was pruned"
            if newer.checkpoint == record.checkpoint:
                break  # the donor still names it: it is unreadable
            record = newer
        _logger.warning("Split %d skips donor split %d: %s", self.split, record.split, error)
        return f"bad checkpoint: {error}"

    def inherit(self, lineage: list[int]) -> None:
        """Add the splits of weights taken over to the model's lineage."""
        self.lineage = sorted(set(self.lineage) | set(lineage))

    # ------------------------------------------------------------------ records
    def record(self, event: TransferEvent) -> TransferEvent:
        """Record ``event`` on the trial (``transfer:<step>``) and count it."""
        self.tried += int(transfer_tried(event))
        self.accepted += int(event.accepted)
        self.set_step_attr(TRANSFER_ATTR_PREFIX, event.step, event.to_dict())
        return event

    def set_step_attr(self, prefix: str, step: int, value: Any) -> None:
        """Set the trial's user attribute ``<prefix><step>`` (a resumed run carries it)."""
        retry_transient(self._trial.set_user_attr, step_key(prefix, step), value)


def _scored(fn: EvaluateFn, model: torch.nn.Module, rows: np.ndarray) -> float:
    """``fn(model, rows)`` in eval mode without gradients; the mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(fn(model, rows))
    finally:
        model.train(was_training)
