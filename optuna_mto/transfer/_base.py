"""The transfer manager contract: when to transfer, from whom, what to try, what to keep."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from optuna_mto._validation import check_int, check_number
from optuna_mto.transfer._selection import is_better

__all__ = ["GATES", "BaseTransferManager", "Candidate", "TransferContext"]

#: Rows a transfer candidate may be judged on (see :attr:`BaseTransferManager.gate`).
GATES = ("own", "unseen", "selection")

#: A candidate state: a label for the event log, and the state to try.
Candidate = tuple[str, dict[str, Any]]


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
    ) -> None:
        self.receiver = receiver
        self.step = step
        self.fitness = fitness
        self.direction = direction
        self.others = others
        self.rng = rng
        self.relations = relations or {}
        self.hparams = hparams or {}


class BaseTransferManager(abc.ABC):
    """Decides knowledge transfer between splits, like a sampler decides parameters.

    A manager is consulted by every split at every report step. It must be cheap,
    seeded and side-effect free: all it sees is a :class:`TransferContext` built
    from the K latest records (one storage read), and all it returns are decisions.
    The trial does the I/O (loading the donor's checkpoint, scoring candidates on the
    receiver's own validation set, applying or discarding them).

    Subclasses implement :meth:`choose_donor`; they may override :meth:`candidates`
    (the transfer operator), :meth:`accept` (the acceptance rule) and :meth:`explore`
    (what to change after an accepted transfer), and must return their constructor
    arguments from :meth:`get_params` so that every worker of a study rebuilds the
    same manager.

    Transfers are asynchronous by default: a split uses whatever the others have
    published so far and never waits. With ``synchronous=True`` a split waits at each
    transfer step until every other unfinished split has reached that step, at most
    ``sync_timeout`` seconds (so a crashed split never blocks the rest); this needs
    all K splits running at once (``n_jobs >= n_splits``).
    """

    def __init__(
        self,
        *,
        interval: int = 1,
        warmup: int = 1,
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        check_int("interval", interval, 1)
        check_int("warmup", warmup, 0)
        check_number("sync_timeout", sync_timeout, 0, low_open=True)
        self.interval = interval
        self.warmup = warmup
        self.synchronous = bool(synchronous)
        self.sync_timeout = float(sync_timeout)

    #: Rows candidates are judged on: ``"own"`` validation set, the ``"unseen"`` part of
    #: it (rows neither model's lineage trained on) or the ``"selection"`` set.
    gate: str = "own"

    @property
    def enabled(self) -> bool:
        """False for managers that never transfer."""
        return True

    @property
    def uses_explorer(self) -> bool:
        """True for strategies that train an explorer copy between transfer steps."""
        return False

    def should_transfer(self, step: int) -> bool:
        """Return True at the report steps where a transfer is considered.

        Steps ``warmup, warmup + interval, warmup + 2 * interval, ...``.
        """
        return self.enabled and step >= self.warmup and (step - self.warmup) % self.interval == 0

    @abc.abstractmethod
    def choose_donor(self, context: TransferContext) -> int | None:
        """Return the split to pull weights from, or None to skip this step."""

    def candidates(
        self, own: dict[str, Any], donor: dict[str, Any], context: TransferContext
    ) -> Iterator[Candidate]:
        """Yield the states to try on the receiver (default: the donor's state, whole)."""
        yield "copy", donor

    def accept(self, before: float, after: float, direction: str) -> bool:
        """Return True to keep a candidate scoring ``after`` over the own ``before``."""
        return is_better(after, before, direction)

    def explore(
        self, optimizer_state: dict[str, Any], context: TransferContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Change hyperparameters after an accepted transfer (default: nothing).

        Args:
            optimizer_state: The accepted optimizer ``state_dict``.
            context: The transfer context (its ``rng`` makes the change replayable).

        Returns:
            The optimizer state to apply, and a JSON record of what changed.
        """
        return optimizer_state, {}

    def get_params(self) -> dict[str, Any]:
        """Return the JSON-serialisable constructor arguments, with the class name."""
        params: dict[str, Any] = {
            "name": type(self).__name__,
            "interval": self.interval,
            "warmup": self.warmup,
        }
        if self.synchronous:
            params.update(synchronous=True, sync_timeout=self.sync_timeout)
        return params
