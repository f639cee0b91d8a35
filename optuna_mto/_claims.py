"""Exclusive claims on splits, so that no split ever runs twice at the same time.

A claim is one row ``(study_id, split, attempt)`` under a primary key in a table that
lives in the study's own database. Inserting it is atomic on every SQL database,
SQLite included (which has no ``SELECT ... FOR UPDATE``): of two workers that race
for the same split and attempt, exactly one insert succeeds.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState

__all__ = ["ClaimTable", "SplitClaim", "create_tables", "plan_next_claim", "utc_now"]

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
    sa.Column("interrupted", sa.Boolean, nullable=False, default=False),
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


def _add_interrupted_column(engine: sa.Engine) -> None:
    """Upgrade a claims table made by optuna-mto 0.1.0 dev builds (no ``interrupted``)."""
    columns = {c["name"] for c in sa.inspect(engine).get_columns("mto_split_claims")}
    if "interrupted" in columns:
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE mto_split_claims ADD COLUMN interrupted BOOLEAN NOT NULL DEFAULT FALSE"
            )
    except sa.exc.DatabaseError:  # another worker added it first
        columns = {c["name"] for c in sa.inspect(engine).get_columns("mto_split_claims")}
        if "interrupted" not in columns:
            raise


@dataclasses.dataclass(frozen=True)
class SplitClaim:
    """The latest claim of a split.

    Attributes:
        split: Split index.
        attempt: 0 for the first run, n for the n-th retry.
        trial_id: The trial that runs it (None until created).
        claimed_at: When it was claimed (naive UTC).
        interrupted: This attempt was stopped by the user (Ctrl-C, SIGTERM).
        interruptions: How many attempts of the split, this one included, were.
    """

    split: int
    attempt: int
    trial_id: int | None
    claimed_at: datetime.datetime
    interrupted: bool = False
    interruptions: int = 0

    @property
    def crashes(self) -> int:
        """Attempts so far that ended other than by interruption (or still run)."""
        return self.attempt + 1 - self.interruptions


def utc_now() -> datetime.datetime:
    """The current time as claims record it (naive UTC)."""
    return _now()


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
    ``orphan_after``. Attempts the user interrupted do not use up retries: only
    crashes, exceptions and kills count against ``max_retries``.

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
        if failed and claim.crashes <= max_retries:
            retries.append((split, claim.attempt + 1))
    return fresh + retries


class ClaimTable:
    """The claims of one study, in the study's database."""

    def __init__(self, engine: sa.Engine, study_id: int) -> None:
        self._engine = engine
        self._study_id = study_id
        create_tables(_metadata, engine)
        _add_interrupted_column(engine)

    def latest(self) -> dict[int, SplitClaim]:
        """Return the latest claim of every split that has one (one query)."""
        query = sa.select(_claims).where(_claims.c.study_id == self._study_id)
        rows: dict[int, list[Any]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                rows.setdefault(row.split, []).append(row)
        out: dict[int, SplitClaim] = {}
        for split, attempts in rows.items():
            last = max(attempts, key=lambda r: r.attempt)
            interruptions = sum(1 for r in attempts if r.interrupted)
            out[split] = SplitClaim(
                split, last.attempt, last.trial_id, last.claimed_at,
                bool(last.interrupted), interruptions,
            )  # fmt: skip
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
            "interrupted": False,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(_claims).values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def attach_trial(self, split: int, attempt: int, trial_id: int) -> None:
        """Record the trial that runs a claimed split."""
        self._update(split, attempt, trial_id=trial_id)

    def mark_interrupted(self, split: int, attempt: int) -> None:
        """Record that the user stopped this attempt (it does not use up a retry)."""
        self._update(split, attempt, interrupted=True)

    def _update(self, split: int, attempt: int, **values: Any) -> None:
        stmt = (
            sa.update(_claims)
            .where(
                _claims.c.study_id == self._study_id,
                _claims.c.split == split,
                _claims.c.attempt == attempt,
            )
            .values(**values)
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)
