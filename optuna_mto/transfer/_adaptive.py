"""The paper's adaptive MTO (AMTO): explorers, and relation scores learned per split."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optuna_mto._validation import check_number
from optuna_mto.transfer._base import BaseTransferManager, TransferContext

__all__ = ["AdaptiveTransfer", "softmax_select", "update_relation"]

_CRITERIA = ("metric", "loss")


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
    larger ``interval`` to explore less often). The SupervisedTrainer trains
    explorers automatically; with the objective API, train ``trial.explorer.model``
    with ``trial.explorer.optimizer`` alongside your model when it is not None.

    Args:
        interval: Report steps between transfer steps (one explorer per interval).
        warmup: First report step at which an explorer is created.
        temperature: Softmax temperature of source selection (> 0).
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
        warmup: int = 1,
        temperature: float = 1.0,
        criterion: str = "metric",
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

    @property
    def uses_explorer(self) -> bool:
        """Always True."""
        return True

    def choose_donor(self, context: TransferContext) -> int | None:
        """Draw the next explorer's source from softmax(relations / temperature)."""
        scores = {k: context.relations.get(k, 0.0) for k in context.others}
        return softmax_select(scores, self.temperature, context.rng)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        params = {**super().get_params(), "temperature": self.temperature}
        if self.criterion != "metric":
            params["criterion"] = self.criterion
        return params
