"""The transfer manager contract: when to transfer, from whom, what to try, what to keep."""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_mto._events import TransferEvent
from optuna_mto._validation import check_int, check_number
from optuna_mto.transfer._selection import is_better

if TYPE_CHECKING:
    from optuna_mto._board import SplitRecord
    from optuna_mto._handle import SplitHandle

__all__ = ["GATES", "BaseTransferManager", "Candidate", "TransferContext", "transfer_once"]

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


class BaseTransferManager(abc.ABC):
    """Decides knowledge transfer between splits, like a sampler decides parameters.

    A manager owns its algorithm. At each transfer step (:meth:`should_transfer`) of
    every split, :meth:`on_report` gets a :class:`TransferContext` (the K latest
    records, read once; a generator seeded from study seed, split and step) and the
    split's :class:`~optuna_mto._handle.SplitHandle`, through which it loads donor
    checkpoints, scores and applies candidates, and records events; it never touches
    storage or Optuna itself. Its per-split state goes into ``handle.state``, which is
    checkpointed and restored with the split. :meth:`on_split_end` ends a split.

    The default :meth:`on_report` is a single-donor transfer in named steps:
    :meth:`choose_donor` (which split), :meth:`candidates` (the transfer operator),
    :meth:`accept` (the acceptance rule, on the rows named by :attr:`gate`) and
    :meth:`explore` (what to change after a kept transfer). Subclasses implement
    :meth:`choose_donor` and override whichever step or hook they need, and return
    their constructor arguments from :meth:`get_params` so that every worker of a
    study rebuilds the same manager.

    Transfers are considered at report steps ``warmup, warmup + interval,
    warmup + 2 * interval, ...``; ``warmup`` defaults to ``interval`` (``interval=20``:
    steps 20, 40, ...; the default ``interval=1``: every step from step 1). A run that
    ends before step ``warmup`` never transfers, and ``optimize`` warns about it (see
    :meth:`warn_if_never_transfers`).

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
        warmup: int | None = None,
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        check_int("interval", interval, 1)
        warmup = interval if warmup is None else warmup
        check_int("warmup", warmup, 0)
        check_number("sync_timeout", sync_timeout, 0, low_open=True)
        self.interval = interval
        self.warmup = warmup
        self.synchronous = bool(synchronous)
        self.sync_timeout = float(sync_timeout)

    #: Rows candidates are judged on: ``"own"`` validation set, the ``"unseen"`` part of
    #: it (rows neither model's lineage trained on) or the ``"selection"`` set.
    gate: str = "own"

    #: The study's default output once complete (named at the end of ``optimize`` and
    #: written by ``optuna-mto export``): ``"ensemble"`` (the K models combined) or
    #: ``"uniform_soup"`` (their weights averaged into one model; for strategies whose
    #: splits share one start, such as :class:`~optuna_mto.transfer.AveragingTransfer`).
    default_output: str = "ensemble"

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

    def warn_if_never_transfers(self, n_steps: int) -> bool:
        """Warn (``UserWarning``) if none of the report steps ``0 .. n_steps - 1`` transfers.

        ``optimize`` calls it before any split starts when the objective declares its
        ``epochs`` (:class:`~optuna_mto.SupervisedTrainer`), and else when a split
        finishes without having reached a transfer step. The text depends only on the
        manager and ``n_steps``, so Python shows it once per process.

        Returns:
            True if it warned.
        """
        if not self.enabled or any(self.should_transfer(step) for step in range(n_steps)):
            return False
        warnings.warn(
            f"{type(self).__name__}(interval={self.interval}, warmup={self.warmup}) never "
            f"transfers in a run of {n_steps} report step(s) (steps 0 to {n_steps - 1}): its "
            f"first transfer step is step {self.warmup}. Lower interval (warmup defaults to "
            "it) or report more steps; to train the splits independently, create the study "
            "with transfer=NoTransfer().",
            UserWarning,
            stacklevel=1,
        )
        return True

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        """Run the strategy at a transfer step; return the step's event, if any.

        The event's ``accepted`` says whether the split's weights were replaced; the
        report then publishes ``event.after`` as the split's fitness (when judged on
        its own validation set) or scores the new weights again.
        """
        return transfer_once(self, context, handle)

    def on_split_end(self, handle: SplitHandle) -> None:
        """Called once when the split's objective has returned (or was pruned)."""
        handle.explorer = None

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


def transfer_once(
    manager: BaseTransferManager,
    context: TransferContext,
    handle: SplitHandle,
    donor: int | None = None,
    gate: str | None = None,
) -> TransferEvent | None:
    """One single-donor transfer: choose, load, score candidates, keep the best if better.

    Candidates are judged on the rows of ``gate`` (default ``manager.gate``); a kept
    candidate's optimizer state goes through ``manager.explore``, and the donor's
    hyperparameters come with its optimizer state (the split's ``hparams`` record the
    change). ``donor`` skips ``manager.choose_donor`` when the caller has chosen.
    """
    donor = manager.choose_donor(context) if donor is None else donor
    if donor is None:
        return None
    record = context.records[donor]
    if record.checkpoint.artifact_id in handle.tried_checkpoints:
        return None  # already scored these exact weights
    handle.tried_checkpoints.add(record.checkpoint.artifact_id)
    gate = manager.gate if gate is None else gate
    rows = handle.gate_rows(gate, record.lineage or [donor])
    before = context.fitness
    if rows is not None and len(rows):
        before = handle.evaluate(rows=rows)

    def event(operator: str, after: float, accepted: bool, **extra: Any) -> TransferEvent:
        return TransferEvent(
            context.step, handle.split, donor, record.trial_number, record.step,
            operator, before, after, accepted, judged_on=gate, **extra,
        )  # fmt: skip

    if rows is not None and len(rows) == 0:
        return handle.record(event("none", math.nan, False, reason=f"no {gate} rows"))
    donor_state = handle.load_donor(record)
    if isinstance(donor_state, str):
        return handle.record(event("none", math.nan, False, reason=donor_state))
    own = handle.capture()
    best: tuple[str, float, dict[str, Any]] | None = None
    for label, candidate in manager.candidates(own, donor_state, context):
        handle.apply(candidate)
        score = handle.evaluate(rows=rows)
        if best is None or is_better(score, best[1], context.direction):
            best = (label, score, candidate)
    if best is None:
        handle.apply(own)
        return None
    if not manager.accept(before, best[1], context.direction):
        handle.apply(own)
        return handle.record(event(best[0], best[1], False))
    chosen, changes = best[2], {}
    if "optimizer" in chosen and handle.optimizer is not None:
        explored, changes = manager.explore(chosen["optimizer"], context)
        chosen = {**chosen, "optimizer": explored}
    chosen, changes = handle.hparams.after_transfer(
        chosen, donor_state, (donor, record.trial_number), manager, context, changes,
        taken=best[2],
    )  # fmt: skip
    handle.apply(chosen)
    handle.hparams.notify()
    handle.inherit(record.lineage or [donor])
    return handle.record(event(best[0], best[1], True, hparams=changes))
