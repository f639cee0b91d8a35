"""The paper's adaptive MTO (AMTO): explorers, and relation scores learned per split."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_mto._step.events import TransferEvent
from optuna_mto._step.state import apply_state, capture_state
from optuna_mto._storage.schema import (
    CHECKPOINT_HPARAMS,
    CHECKPOINT_MODEL,
    CHECKPOINT_STRATEGY,
    RELATIONS_ATTR_PREFIX,
    RELATIONS_FIELD,
)
from optuna_mto._validation import check_number
from optuna_mto.transfer._base import BaseTransferManager, TransferContext
from optuna_mto.transfer._companion import Companion
from optuna_mto.transfer._interpolate import interpolate_state
from optuna_mto.transfer._selection import is_better

if TYPE_CHECKING:
    from optuna_mto._step.handle import SplitHandle

__all__ = ["AdaptiveTransfer", "Explorer", "relations_of", "softmax_select", "update_relation"]

_CRITERIA = ("metric", "loss")
#: The name of the explorer among a split's companion models (``trial.explorer``).
EXPLORER = "explorer"


def softmax_select(
    scores: Mapping[int, float], temperature: float, rng: np.random.Generator
) -> int | None:
    """Draw a split with probability ``softmax(score / temperature)``; None if empty."""
    keys = sorted(scores)
    if not keys:
        return None
    logits = np.array([scores[k] for k in keys], dtype=np.float64) / temperature
    logits -= logits.max()
    weights = np.exp(logits)
    return int(keys[rng.choice(len(keys), p=weights / weights.sum())])


def update_relation(score: float, solver: float, explorer: float, direction: str) -> float:
    """Return the relation score after an explorer from that source was judged.

    The score grows by ``tanh(gain)``, where ``gain`` is how much better the explorer
    did than the solver on the receiver's validation set (``solver loss - explorer
    loss`` in the paper's terms; positive when the source helped).
    """
    gain = explorer - solver if direction == "maximize" else solver - explorer
    if math.isnan(gain):
        return score
    return score + math.tanh(gain)


@dataclasses.dataclass
class Explorer(Companion):
    """A copy of a source split's model that trains on this split's data (AMTO).

    The companion ``"explorer"`` of a split (``trial.companions``, ``trial.explorer``).
    Train ``model`` with ``optimizer`` (and step ``scheduler``) exactly like your own
    model until the next report (``trial.train_companions`` does); the report decides
    whether it replaces yours.

    Attributes:
        model: The explorer's model (same architecture, on the trial's device).
        optimizer: Its optimizer, holding the source's optimizer state.
        scheduler: Its LR scheduler, if the split has one.
        source: The split whose weights it started from.
        source_trial: That split's Optuna trial number.
        source_step: The step at which the source published them.
        lineage: Splits whose training data shaped its weights.
        hparams: The source's hyperparameters (checkpoint form), taken if it is kept.
        train: Always True: the objective trains it.
    """

    optimizer: Any = dataclasses.field()  # required here (no default)
    scheduler: Any = dataclasses.field()
    source: int
    source_trial: int
    source_step: int
    lineage: list[int]
    hparams: dict[str, Any] | None = None


def relations_of(state: Mapping[str, Any]) -> dict[int, float]:
    """Return the relation scores kept in a split's strategy state, by source split."""
    return {int(k): float(v) for k, v in state.get(RELATIONS_FIELD, {}).items()}


class AdaptiveTransfer(BaseTransferManager):
    """Adaptive multi-task optimisation (AMTO), as in Zhang et al. (2020).

    Each split keeps its solver (its model) and, between transfer steps, an
    *explorer*: a copy of a source split's weights and optimizer state that trains on
    the receiver's own training data for one interval. At the next transfer step the
    explorer replaces the solver only if it scores better on the receiver's
    validation set, and the receiver's relation score for that source grows by
    ``tanh(solver loss - explorer loss)``. Sources are drawn from
    ``softmax(relation scores / temperature)``, so each split learns which donors
    help it.

    Explorers cost compute: each split trains two models between transfer steps, so
    a split does about twice the training work of independent training (use a
    larger ``interval`` to explore less often). The explorer is the split's companion
    model ``"explorer"``: the SupervisedTrainer trains it automatically; with the
    objective API, call ``trial.train_companions`` after each epoch of your model.
    Measured against independent splits trained twice as long (benchmarks/README.md), it
    ties where training converges and loses where more epochs would still help; its
    relation scores single out a bad donor but stay near chance among random splits.

    Example:
        >>> from optuna_mto.transfer import AdaptiveTransfer
        >>> AdaptiveTransfer(criterion="loss").has_trainable_companions  # its explorers
        True

    Args:
        interval: Report steps between transfer steps (one explorer per interval).
        warmup: First report step at which an explorer is created (and judged
            ``interval`` steps later); default ``interval``.
        temperature: Softmax temperature of source selection (> 0).
        blend: Also judge the average of the solver's and the explorer's weights (the
            solver's optimizer state kept), and keep whichever of explorer and average
            scores best if it beats the solver. Both trained on this split's data for the
            last interval, so the explorer's compute is not simply thrown away when it
            loses; a blend of unrelated weights scores badly and is never kept.
        criterion: What explorers are judged and relations updated on: ``"metric"``
            (the study's metric, e.g. accuracy; its tied, tiny differences barely move
            the relation scores) or ``"loss"`` (the validation loss, as in the paper;
            needs an objective with ``evaluate_loss(model, indices)``, such as
            :class:`~optuna_mto.SupervisedTrainer`). Splits are ranked by the metric
            either way.
        synchronous: Wait for the others at transfer steps (see base class).
        sync_timeout: Longest wait in synchronous mode.
    """

    def __init__(
        self,
        *,
        interval: int = 1,
        warmup: int | None = None,
        temperature: float = 1.0,
        criterion: str = "metric",
        blend: bool = False,
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        super().__init__(
            interval=interval, warmup=warmup, synchronous=synchronous, sync_timeout=sync_timeout
        )
        check_number("temperature", temperature, 0, low_open=True)
        if criterion not in _CRITERIA:
            raise ValueError(
                f"criterion must be one of {_CRITERIA}, but got criterion={criterion!r}."
            )
        self.temperature = float(temperature)
        self.criterion = criterion
        self.blend = bool(blend)

    @property
    def has_trainable_companions(self) -> bool:
        """Always True: the explorer trains between transfer steps."""
        return True

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        """Judge the explorer trained since the last transfer step, then start the next."""
        event = self._resolve(context, handle)
        fitness = handle.fitness_after(context.fitness, event)
        relations = self.relations(handle.state)
        for k in range(handle.n_splits):
            if k != handle.split:
                relations.setdefault(k, 0.0)
        handle.state[RELATIONS_FIELD] = {str(k): v for k, v in sorted(relations.items())}
        self._start(context.replace(fitness=fitness, relations=relations), handle)
        return event

    def relations(self, state: Mapping[str, Any]) -> dict[int, float]:
        """Return the relation scores kept in a split's strategy state, by source split."""
        return relations_of(state)

    def state_from_checkpoint(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Return the strategy state of a checkpoint (its relation scores).

        Format 1 checkpoints (optuna-mto 0.1) kept the relation scores at the top level.
        """
        if CHECKPOINT_STRATEGY in checkpoint:
            return super().state_from_checkpoint(checkpoint)
        relations = checkpoint.get(RELATIONS_FIELD)
        return {RELATIONS_FIELD: relations} if relations else {}

    def _resolve(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        """Keep the explorer if it beats the solver; learn the source's relation score."""
        explorer = handle.companions.pop(EXPLORER, None)
        if explorer is None:
            return None
        value, direction, judged_on = context.fitness, context.direction, "own"
        if self.criterion == "loss":
            judged_on = "loss"
            assert handle.model is not None
            value, direction = handle.judge(handle.model, "loss")
        score, _ = handle.judge(explorer.model, self.criterion)
        relations = self.relations(handle.state)
        source = explorer.source
        relations[source] = update_relation(relations.get(source, 0.0), value, score, direction)
        handle.state[RELATIONS_FIELD] = {str(k): v for k, v in sorted(relations.items())}
        # load_state_dict copies, and the explorer is dropped: no clone needed.
        taken = capture_state(explorer.model, explorer.optimizer, explorer.scheduler, clone=False)
        operator, best = "explorer", score
        if self.blend:
            own = handle.capture()
            mixed = interpolate_state(own[CHECKPOINT_MODEL], taken[CHECKPOINT_MODEL], 0.5)
            blended = {**own, CHECKPOINT_MODEL: mixed}
            handle.apply(blended)
            assert handle.model is not None
            blend_score, _ = handle.judge(handle.model, self.criterion)
            handle.apply(own)
            if is_better(blend_score, best, direction):
                operator, best, taken = "blend", blend_score, blended
        accepted = self.accept(value, best, direction)
        if accepted:
            handle.apply(taken)
            handle.inherit(explorer.lineage)
            if operator == "explorer":  # a blend keeps the solver's optimizer and values
                handle.hparams.adopt(explorer.hparams, source, context.step, explorer=source)
        scores = {str(k): round(v, 6) for k, v in sorted(relations.items())}
        handle.set_step_attr(RELATIONS_ATTR_PREFIX, context.step,
                             {"step": context.step, "scores": scores})  # fmt: skip
        return handle.record(
            TransferEvent(
                context.step,
                handle.split,
                source,
                explorer.source_trial,
                explorer.source_step,
                operator,
                value,
                best,
                accepted,
                judged_on=judged_on,
            )  # fmt: skip
        )

    def _start(self, context: TransferContext, handle: SplitHandle) -> None:
        """Start an explorer from a source drawn by relation score."""
        source = self.choose_donor(context)
        if source is None:
            return
        record = context.records[source]
        donor_state = handle.load_donor(record)
        if isinstance(donor_state, str):
            return
        model, optimizer, scheduler = copy.deepcopy(
            (handle.model, handle.optimizer, handle.scheduler)
        )
        apply_state(donor_state, model, optimizer, scheduler)
        handle.companions[EXPLORER] = Explorer(
            model, optimizer, scheduler, source, record.trial_number, record.step,
            sorted(set(handle.lineage) | set(record.lineage or [source])),
            donor_state.get(CHECKPOINT_HPARAMS),
        )  # fmt: skip

    def choose_donor(self, context: TransferContext) -> int | None:
        """Draw the next explorer's source from softmax(relations / temperature)."""
        scores = {k: context.relations.get(k, 0.0) for k in context.others}
        return softmax_select(scores, self.temperature, context.rng)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        params = {**super().get_params(), "temperature": self.temperature}
        if self.criterion != "metric":
            params["criterion"] = self.criterion
        if self.blend:
            params["blend"] = True
        return params
