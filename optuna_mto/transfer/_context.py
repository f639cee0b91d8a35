"""What a transfer manager may look at when deciding a transfer (read-only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from optuna_mto._step.board import SplitRecord

__all__ = ["TransferContext"]


class TransferContext:
    """What a manager may look at when deciding a transfer (read-only).

    Attributes:
        receiver: The receiving split's index.
        step: The report step.
        fitness: The receiver's own validation score at this step.
        direction: ``"maximize"`` or ``"minimize"``.
        others: Latest published fitness of every other split, by split index.
        rng: Generator seeded from (study seed, receiver, step): replayable.
        relations: The receiver's learned relation score of each other split
            (adaptive strategies; empty otherwise).
        hparams: The receiver's current values of the hyperparameters its objective
            suggested (``trial.suggest_*``); empty when it suggested none.
        records: The latest published record of every other split that may give
            (pruned splits left out), by split index: fitness, step, checkpoint, lineage.
    """

    def __init__(
        self,
        receiver: int,
        step: int,
        fitness: float,
        direction: str,
        others: Mapping[int, float],
        rng: np.random.Generator,
        relations: Mapping[int, float] | None = None,
        hparams: Mapping[str, Any] | None = None,
        records: Mapping[int, SplitRecord] | None = None,
    ) -> None:
        self.receiver = receiver
        self.step = step
        self.fitness = fitness
        self.direction = direction
        self.others = others
        self.rng = rng
        self.relations = relations or {}
        self.hparams = hparams or {}
        self.records = records or {}

    def replace(self, **changes: Any) -> TransferContext:
        """Return a copy with ``changes`` (e.g. ``fitness=`` after a kept transfer)."""
        fields = {
            "receiver": self.receiver, "step": self.step, "fitness": self.fitness,
            "direction": self.direction, "others": self.others, "rng": self.rng,
            "relations": self.relations, "hparams": self.hparams, "records": self.records,
        }  # fmt: skip
        return TransferContext(**{**fields, **changes})
