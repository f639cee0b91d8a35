"""The blackboard: one small record per split, published through the Optuna storage."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import optuna

from optuna_mto.checkpoints import CheckpointRef

__all__ = ["BOARD_PREFIX", "Blackboard", "SplitRecord", "records_from_attrs"]

BOARD_PREFIX = "mto:board:"


@dataclasses.dataclass(frozen=True)
class SplitRecord:
    """What one split tells the others at a report step.

    Attributes:
        split: Split index.
        trial_id: Optuna trial id of the run that published it.
        trial_number: Optuna trial number (for people).
        step: The report step.
        fitness: The split's validation score after this step's transfer decision.
        checkpoint: The checkpoint holding the weights that scored ``fitness``.
        previous_checkpoint: The split's checkpoint before that one (a fallback).
        best_fitness: Best score the split has reached so far.
        best_step: Step at which ``best_fitness`` was reached.
        best_checkpoint: The checkpoint of the best weights.
        finished: True once the split's trial completed.
        time: Unix time of publication.
        lineage: Splits whose training data shaped the current weights.
        best_lineage: The same for the best weights.
        tried: Transfers this run has scored so far.
        accepted: Transfers this run has kept so far.
        total_steps: Steps the split expects to report (for progress), if known.
        started: Unix time at which this run of the split started (for the ETA).
        first_step: The first step of this run (after a resume: the step it resumed at).
        pruned: True once the split was pruned (``finished`` too); never a donor then.
    """

    split: int
    trial_id: int
    trial_number: int
    step: int
    fitness: float
    checkpoint: CheckpointRef
    previous_checkpoint: CheckpointRef | None
    best_fitness: float
    best_step: int
    best_checkpoint: CheckpointRef
    finished: bool = False
    time: float = dataclasses.field(default_factory=time.time)
    lineage: list[int] | None = None
    best_lineage: list[int] | None = None
    tried: int = 0
    accepted: int = 0
    total_steps: int | None = None
    started: float | None = None
    first_step: int = 0
    pruned: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form stored in the study."""
        out = dataclasses.asdict(self)
        out["checkpoint"] = self.checkpoint.to_dict()
        prev = self.previous_checkpoint
        out["previous_checkpoint"] = None if prev is None else prev.to_dict()
        out["best_checkpoint"] = self.best_checkpoint.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitRecord:
        """Rebuild a record from :meth:`to_dict` output."""
        data = dict(data)
        data["checkpoint"] = CheckpointRef.from_dict(data["checkpoint"])
        prev = data.get("previous_checkpoint")
        data["previous_checkpoint"] = None if prev is None else CheckpointRef.from_dict(prev)
        data["best_checkpoint"] = CheckpointRef.from_dict(data["best_checkpoint"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Blackboard:
    """Latest record of each split, kept in the study's system attributes.

    Publishing is one upsert of one small JSON value; reading all K records is one
    query of the study's system attributes. Neither grows with the number of steps
    or trials in the study.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int) -> None:
        self._storage = storage
        self._study_id = study_id

    def publish(self, record: SplitRecord) -> None:
        """Publish ``record`` as the latest of its split."""
        self._storage.set_study_system_attr(
            self._study_id, f"{BOARD_PREFIX}{record.split}", record.to_dict()
        )

    def read(self) -> dict[int, SplitRecord]:
        """Return the latest record of every split that has published one."""
        attrs = self._storage.get_study_system_attrs(self._study_id)
        return records_from_attrs(attrs)


def records_from_attrs(attrs: dict[str, Any]) -> dict[int, SplitRecord]:
    """Extract the board records from a study's system attributes."""
    out = {}
    for key, value in attrs.items():
        if key.startswith(BOARD_PREFIX):
            record = SplitRecord.from_dict(value)
            out[record.split] = record
    return out
