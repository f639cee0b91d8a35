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

from optuna_mto._storage.schema import claims_table, ensure_tables

__all__ = ["Budgets", "ClaimTable", "SplitClaim", "plan_next_claim", "utc_now"]

_claims = claims_table
_TABLE = claims_table.name
#: Columns added after the first release, with their SQL type: added to older tables.
_LATER_COLUMNS = {
    "interrupted": "BOOLEAN NOT NULL DEFAULT FALSE",
    "errored": "BOOLEAN NOT NULL DEFAULT FALSE",
}


def _add_later_columns(engine: sa.Engine) -> None:
    """Upgrade a claims table made by an earlier optuna-mto (columns added since).

    Columns that exist without a server-side default (made by development builds) get
    one where the database can add it, so that older workers can still insert claims.
    """
    for name, sql_type in _LATER_COLUMNS.items():
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns(_TABLE)}
        if name in columns:
            if columns[name].get("default") is None and engine.dialect.name != "sqlite":
                with engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {_TABLE} ALTER COLUMN {name} SET DEFAULT FALSE"
                    )
            continue
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {_TABLE} ADD COLUMN {name} {sql_type}")
        except sa.exc.DatabaseError:  # another worker added it first
            columns = {c["name"] for c in sa.inspect(engine).get_columns(_TABLE)}
            if name not in columns:
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
        worker: ``host:pid:thread`` of the worker that claimed it.
        errored: This attempt ended with an exception of the user's code.
        errors: How many attempts of the split, this one included, did.
    """

    split: int
    attempt: int
    trial_id: int | None
    claimed_at: datetime.datetime
    interrupted: bool = False
    interruptions: int = 0
    worker: str = ""
    errored: bool = False
    errors: int = 0

    def preemptions(self, latest_failed: bool) -> int:
        """Attempts lost with their worker (killed, lost heartbeat), not by an error or Ctrl-C.

        Every attempt before the latest one has ended; it counts as a preemption unless it
        recorded an exception or an interruption (a killed worker can record nothing).

        Args:
            latest_failed: Whether the latest attempt has ended without completing.
        """
        ended = self.attempt + (1 if latest_failed else 0)
        return max(0, ended - self.errors - self.interruptions)

    @property
    def host(self) -> str:
        """The host of the claiming worker."""
        return self.worker.rsplit(":", 2)[0] if self.worker.count(":") >= 2 else ""

    @property
    def pid(self) -> int | None:
        """The process id of the claiming worker, if recorded."""
        parts = self.worker.rsplit(":", 2)
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def utc_now() -> datetime.datetime:
    """The current time as claims record it (naive UTC)."""
    return _now()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class Budgets:
    """How often a split may be run again, by why its attempt ended.

    Attributes:
        max_retries: Attempts that raised an exception in the user's code, beyond the
            first run.
        max_preemptions: Attempts lost with their worker (SIGKILL, OOM, lost heartbeat,
            host gone). Interruptions (Ctrl-C, SIGTERM) are never counted.
    """

    max_retries: int
    max_preemptions: int

    def exhausted(self, claim: SplitClaim, latest_failed: bool) -> str | None:
        """Return why ``claim``'s split is given up (``"errors"``/``"preemptions"``), or None."""
        if claim.errors > self.max_retries:
            return "errors"
        if claim.preemptions(latest_failed) > self.max_preemptions:
            return "preemptions"
        return None


def plan_next_claim(
    n_splits: int,
    latest: dict[int, SplitClaim],
    states: dict[int, TrialState],
    budgets: Budgets,
    orphan_after: datetime.timedelta,
    now: datetime.datetime | None = None,
    gone: frozenset[int] = frozenset(),
    unsettled: frozenset[int] = frozenset(),
) -> list[tuple[int, int]]:
    """Return the ``(split, attempt)`` pairs a worker may try to claim, best first.

    Pure function: splits never claimed come first (in index order), then failed
    splits whose budgets are not used up. A claim whose trial was never created (the
    worker died in between) counts as a lost worker once it is older than
    ``orphan_after``. Exceptions count against ``budgets.max_retries``, lost workers
    against ``budgets.max_preemptions``, interruptions against nothing. A pruned split
    is finished, like a complete one.

    Args:
        n_splits: K.
        latest: The latest claim of each split that has one.
        states: The state of each claimed trial, by trial id.
        budgets: The retry and preemption budgets.
        orphan_after: Age after which a claim without a trial is abandoned.
        now: The current time (naive UTC); for tests.
        gone: Splits whose claiming worker is known to be dead (its process is gone
            from this host): their claims without a trial count as lost at once.
        unsettled: Splits whose claim changed while the caller read the states (a trial
            attached, a new attempt claimed): some worker is acting on them right now,
            so they are not claimable on this look.
    """
    now = now or _now()
    fresh, retries = [], []
    for split in range(n_splits):
        if split in unsettled:
            continue
        claim = latest.get(split)
        if claim is None:
            fresh.append((split, 0))
            continue
        if claim.trial_id is None:
            failed = split in gone or now - claim.claimed_at > orphan_after
        else:
            failed = states.get(claim.trial_id) == TrialState.FAIL
        if failed and budgets.exhausted(claim, latest_failed=True) is None:
            retries.append((split, claim.attempt + 1))
    return fresh + retries


class ClaimTable:
    """The claims of one study, in the study's database."""

    def __init__(self, engine: sa.Engine, study_id: int) -> None:
        self._engine = engine
        self._study_id = study_id
        ensure_tables(engine, claims_table)
        _add_later_columns(engine)

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
            out[split] = SplitClaim(
                split, last.attempt, last.trial_id, last.claimed_at,
                interrupted=bool(last.interrupted),
                interruptions=sum(1 for r in attempts if r.interrupted),
                worker=last.worker,
                errored=bool(last.errored),
                errors=sum(1 for r in attempts if r.errored),
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
            "errored": False,
        }
        for tries_left in (2, 1, 0):
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(_claims).values(**row))
                return True
            except sa.exc.IntegrityError:
                if self._exists(split, attempt):
                    return False  # another worker won the race
                # Gone again: a claim withdrawn in between (see ``release``). Else a
                # broken table (e.g. a NOT NULL column without default), not a race.
                if not tries_left:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _exists(self, split: int, attempt: int) -> bool:
        query = sa.select(_claims.c.split).where(
            _claims.c.study_id == self._study_id,
            _claims.c.split == split,
            _claims.c.attempt == attempt,
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def claim_of(self, split: int, attempt: int) -> SplitClaim | None:
        """Return one attempt's claim as stored now (flags of that attempt only), or None."""
        query = sa.select(_claims).where(
            _claims.c.study_id == self._study_id,
            _claims.c.split == split,
            _claims.c.attempt == attempt,
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return SplitClaim(
            split, row.attempt, row.trial_id, row.claimed_at,
            interrupted=bool(row.interrupted), worker=row.worker, errored=bool(row.errored),
        )  # fmt: skip

    def last_attempt(self, split: int) -> int:
        """Return the highest attempt claimed for ``split`` (-1 if none), read now."""
        query = sa.select(sa.func.max(_claims.c.attempt)).where(
            _claims.c.study_id == self._study_id, _claims.c.split == split
        )
        with self._engine.connect() as conn:
            last = conn.execute(query).scalar()
        return -1 if last is None else int(last)

    def release(self, split: int, attempt: int, worker: str) -> None:
        """Withdraw this worker's claim before it created a trial (it found the split taken).

        Only a claim of ``worker`` that has no trial yet is removed: the split's earlier
        attempt is its latest claim again.
        """
        stmt = sa.delete(_claims).where(
            _claims.c.study_id == self._study_id,
            _claims.c.split == split,
            _claims.c.attempt == attempt,
            _claims.c.worker == worker[:255],
            _claims.c.trial_id.is_(None),
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def attach_trial(self, split: int, attempt: int, trial_id: int) -> None:
        """Record the trial that runs a claimed split."""
        self._update(split, attempt, trial_id=trial_id)

    def mark_interrupted(self, split: int, attempt: int) -> None:
        """Record that the user stopped this attempt (it does not use up a retry)."""
        self._update(split, attempt, interrupted=True)

    def mark_errored(self, split: int, attempt: int) -> None:
        """Record that this attempt raised in the user's code (it uses up a retry)."""
        self._update(split, attempt, errored=True)

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
