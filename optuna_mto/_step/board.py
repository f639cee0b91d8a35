"""The blackboard: one small record per split, published through the Optuna storage."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import optuna
import sqlalchemy as sa

from optuna_mto._logging import get_logger
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    BOARD_PREFIX_V1,
    FORMAT_KEY,
    FORMAT_VERSION,
    board_table,
    ensure_tables,
)
from optuna_mto.checkpoints import CheckpointRef

__all__ = ["Blackboard", "SplitRecord", "wait_for_step"]

_logger = get_logger(__name__)
_SYNC_POLL_S = 0.2


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
        arch: Signature of the model's tensor names and shapes (see ``_arch``); None if
            unknown (a record published by an older optuna-mto).
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
    arch: str | None = None

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
    """The latest record of each split, in optuna-mto's own table ``mto_board``.

    One row per (study, split). Publishing is one small upsert; reading all K records
    is one indexed query of this study's K rows. Neither grows with the number of
    steps, trials or anything else stored in the study (such as dashboard figures).

    Args:
        engine: The SQLAlchemy engine of the study's database.
        study_id: The study's id.
    """

    def __init__(self, engine: sa.Engine, study_id: int) -> None:
        self._engine = engine
        self._study_id = study_id
        ensure_tables(engine, board_table)

    def publish(self, record: SplitRecord) -> None:
        """Publish ``record`` as the latest of its split."""
        text = json.dumps(record.to_dict())
        with self._engine.begin() as conn:
            updated = conn.execute(
                sa.update(board_table).where(*self._key(record.split)).values(record=text)
            )
            if updated.rowcount == 0:
                conn.execute(
                    sa.insert(board_table).values(
                        study_id=self._study_id, split=record.split, record=text
                    )
                )

    def read(self) -> dict[int, SplitRecord]:
        """Return the latest record of every split that has published one."""
        query = sa.select(board_table.c.record).where(board_table.c.study_id == self._study_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query).scalars().all()
        records = (SplitRecord.from_dict(json.loads(text)) for text in rows)
        return {r.split: r for r in records}

    def upgrade(self, storage: optuna.storages.BaseStorage) -> None:
        """Move a format-1 study's records (study system attributes) into the table.

        Idempotent, and safe while workers publish: a split that already has a row
        keeps it (it is newer than the format-1 attribute).
        """
        attrs = storage.get_study_system_attrs(self._study_id)
        if attrs.get(FORMAT_KEY, 1) >= FORMAT_VERSION:
            return
        have = set(self.read())
        for key, value in attrs.items():
            if key.startswith(BOARD_PREFIX_V1) and value["split"] not in have:
                try:
                    with self._engine.begin() as conn:
                        conn.execute(
                            sa.insert(board_table).values(
                                study_id=self._study_id, split=value["split"],
                                record=json.dumps(value),
                            )
                        )  # fmt: skip
                except sa.exc.IntegrityError:
                    pass  # a worker published (or upgraded) it meanwhile
        storage.set_study_system_attr(self._study_id, FORMAT_KEY, FORMAT_VERSION)

    def _key(self, split: int) -> tuple[Any, ...]:
        return (board_table.c.study_id == self._study_id, board_table.c.split == split)


def wait_for_step(
    board: Blackboard,
    split: int,
    step: int,
    n_splits: int,
    timeout: float,
    stop: threading.Event,
) -> dict[int, SplitRecord]:
    """Read the board once every other split has reached ``step`` or finished.

    Waits at most ``timeout`` seconds (a crashed split never blocks the rest), then goes
    on with what has arrived; returns at once when ``stop`` is set.
    """
    records = retry_transient(board.read)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        waiting = [
            k
            for k in range(n_splits)
            if k != split
            and not (k in records and (records[k].finished or records[k].step >= step))
        ]
        if not waiting:
            return records
        time.sleep(_SYNC_POLL_S)
        records = retry_transient(board.read)
    _logger.warning(
        "Split %d waited %.0f s at step %d; going on without splits that did not arrive.",
        split, timeout, step,
    )  # fmt: skip
    return records
