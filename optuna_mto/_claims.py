"""Exclusive claims on splits, so that no split ever runs twice at the same time.

A claim is one row ``(study_id, split, attempt)`` under a primary key in a table that
lives in the study's own database. Inserting it is atomic on every SQL database,
SQLite included (which has no ``SELECT ... FOR UPDATE``): of two workers that race
for the same split and attempt, exactly one insert succeeds.
"""

from __future__ import annotations

import dataclasses
import datetime

import sqlalchemy as sa
from optuna.trial import TrialState

__all__ = ["ClaimTable", "SplitClaim", "create_tables", "plan_next_claim"]

_metadata = sa.MetaData()
_claims = sa.Table(
    "mto_split_claims",
    _metadata,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("split", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=True),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
)


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """Create ``metadata``'s tables unless they exist, tolerating workers racing to do it.

    ``create_all(checkfirst=True)`` checks then creates, so two workers opening a fresh
    database together can both try to create; the loser's error is harmless as long as
    the tables exist afterwards.
    """
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.DatabaseError:
        existing = set(sa.inspect(engine).get_table_names())
        if not set(metadata.tables) <= existing:
            raise


@dataclasses.dataclass(frozen=True)
class SplitClaim:
    """One row of the claims table."""

    split: int
    attempt: int
    trial_id: int | None
    claimed_at: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def plan_next_claim(
    n_splits: int,
    latest: dict[int, SplitClaim],
    states: dict[int, TrialState],
    max_retries: int,
    orphan_after: datetime.timedelta,
    now: datetime.datetime | None = None,
) -> list[tuple[int, int]]:
    """Return the ``(split, attempt)`` pairs a worker may try to claim, best first.

    Pure function: splits never claimed come first (in index order), then failed
    splits that still have retries left. A claim whose trial was never created
    (the worker died in between) counts as failed once it is older than
    ``orphan_after``.

    Args:
        n_splits: K.
        latest: The latest claim of each split that has one.
        states: The state of each claimed trial, by trial id.
        max_retries: Failed attempts allowed beyond the first.
        orphan_after: Age after which a claim without a trial is abandoned.
        now: The current time (naive UTC); for tests.
    """
    now = now or _now()
    fresh, retries = [], []
    for split in range(n_splits):
        claim = latest.get(split)
        if claim is None:
            fresh.append((split, 0))
            continue
        if claim.trial_id is None:
            failed = now - claim.claimed_at > orphan_after
        else:
            failed = states.get(claim.trial_id) == TrialState.FAIL
        if failed and claim.attempt < max_retries:
            retries.append((split, claim.attempt + 1))
    return fresh + retries


class ClaimTable:
    """The claims of one study, in the study's database."""

    def __init__(self, engine: sa.Engine, study_id: int) -> None:
        self._engine = engine
        self._study_id = study_id
        create_tables(_metadata, engine)

    def latest(self) -> dict[int, SplitClaim]:
        """Return the latest claim of every split that has one (one query)."""
        query = sa.select(_claims).where(_claims.c.study_id == self._study_id)
        out: dict[int, SplitClaim] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                if row.split not in out or row.attempt > out[row.split].attempt:
                    out[row.split] = SplitClaim(
                        row.split, row.attempt, row.trial_id, row.claimed_at
                    )
        return out

    def try_claim(self, split: int, attempt: int, worker: str) -> bool:
        """Insert the claim; return False if another worker holds it already."""
        row = {
            "study_id": self._study_id,
            "split": split,
            "attempt": attempt,
            "trial_id": None,
            "worker": worker[:255],
            "claimed_at": _now(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(_claims).values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def attach_trial(self, split: int, attempt: int, trial_id: int) -> None:
        """Record the trial that runs a claimed split."""
        stmt = (
            sa.update(_claims)
            .where(
                _claims.c.study_id == self._study_id,
                _claims.c.split == split,
                _claims.c.attempt == attempt,
            )
            .values(trial_id=trial_id)
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)
