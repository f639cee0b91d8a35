"""The checkpoint ledger of one split: save, keep (latest, previous, best), publish."""

from __future__ import annotations

import time
from typing import Any

from optuna_mto._step.board import Blackboard, SplitRecord
from optuna_mto._storage.retry import retry_transient
from optuna_mto.checkpoints import CheckpointRef, CheckpointStore
from optuna_mto.transfer import is_better

__all__ = ["CheckpointLedger"]


class CheckpointLedger:
    """Which checkpoints of a split exist, and what the split tells the others.

    A split keeps at most three checkpoints: the latest (what others take, and what a
    retry resumes from), the one before it (a fallback if the latest is unreadable)
    and the best so far (the split's result). Older ones are removed as soon as a new
    one is saved, after the new one is complete.

    Args:
        store: The study's checkpoint store.
        board: The study's blackboard.
        identity: ``(split, trial_id, trial_number)`` of this run.
        direction: ``"maximize"`` or ``"minimize"``.
        name: Prefix of checkpoint names (the study's name).
    """

    def __init__(
        self,
        store: CheckpointStore,
        board: Blackboard,
        identity: tuple[int, int, int],
        direction: str,
        name: str,
    ) -> None:
        self._store = store
        self._board = board
        self.split, self._trial_id, self._trial_number = identity
        self._direction = direction
        self._name = name
        self.latest: CheckpointRef | None = None
        self.previous: CheckpointRef | None = None
        #: ``(fitness, step, ref)`` of the best weights so far.
        self.best: tuple[float, int, CheckpointRef] | None = None
        self.best_lineage: list[int] = [self.split]
        #: Progress fields published with each record (see :class:`SplitRecord`).
        self.started = time.time()
        self.first_step = 0
        self.total_steps: int | None = None
        #: ``(step, fitness)`` of the checkpoint this run resumed from, if it resumed.
        self.resumed_at: tuple[int, float] | None = None
        #: Signature of the model's tensor names and shapes, published with each record.
        self.arch: str | None = None

    def save(
        self, state: dict[str, Any], step: int, fitness: float, lineage: list[int]
    ) -> CheckpointRef:
        """Save ``state`` as the latest checkpoint; keep it as the best if it is."""
        ref = retry_transient(
            self._store.save, state, name=f"{self._name}-split{self.split}-s{step}"
        )
        stale = self.previous
        self.previous, self.latest = self.latest, ref
        if self.best is None or is_better(fitness, self.best[0], self._direction):
            if self.best is not None and self.best[2] not in (self.previous, self.latest):
                self.remove(self.best[2])
            self.best = (fitness, step, ref)
            self.best_lineage = list(lineage)
        if stale is not None and stale not in (self.best[2], self.previous, self.latest):
            self.remove(stale)
        return ref

    def resumed(self, ref: CheckpointRef, best: tuple[float, int, CheckpointRef],
                best_lineage: list[int], step: int, fitness: float) -> None:  # fmt: skip
        """Take over an earlier run's checkpoints: resumed from ``ref`` (``step``, ``fitness``)."""
        self.latest, self.best, self.best_lineage = ref, best, list(best_lineage)
        self.first_step = step + 1
        self.resumed_at = (step, fitness)

    def publish(self, step: int, fitness: float, lineage: list[int], counts: tuple[int, int],
                *, finished: bool = False, pruned: bool = False) -> None:  # fmt: skip
        """Publish the split's record; a finished split offers its best weights."""
        assert self.latest is not None and self.best is not None
        best_fitness, best_step, best_ref = self.best
        record = SplitRecord(
            split=self.split,
            trial_id=self._trial_id,
            trial_number=self._trial_number,
            step=best_step if finished else step,
            fitness=best_fitness if finished else fitness,
            checkpoint=best_ref if finished else self.latest,
            previous_checkpoint=None if finished else self.previous,
            best_fitness=best_fitness,
            best_step=best_step,
            best_checkpoint=best_ref,
            finished=finished,
            lineage=list(lineage),
            best_lineage=list(self.best_lineage),
            tried=counts[0],
            accepted=counts[1],
            total_steps=self.total_steps,
            started=self.started,
            first_step=self.first_step,
            pruned=pruned,
            arch=self.arch,
        )
        retry_transient(self._board.publish, record)

    def keep_only(self, keep: CheckpointRef | None, *others: CheckpointRef | None) -> None:
        """Remove this run's checkpoints (and ``others``) except ``keep``."""
        for ref in {self.latest, self.previous, *others} - {None, keep}:
            self.remove(ref)  # type: ignore[arg-type]

    def remove(self, ref: CheckpointRef) -> None:
        """Remove one checkpoint (missing is fine)."""
        retry_transient(self._store.remove, ref.artifact_id)
