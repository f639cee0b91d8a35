"""The transfer manager contract: when to transfer, from whom, what to try, what to keep."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from optuna_mto._step.events import TransferEvent
from optuna_mto._storage.schema import CHECKPOINT_STRATEGY
from optuna_mto._validation import check_int, check_number
from optuna_mto.transfer._context import TransferContext
from optuna_mto.transfer._selection import is_better

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from optuna_mto._step.handle import SplitHandle

__all__ = ["GATES", "BaseTransferManager", "Candidate", "TransferContext", "transfer_once"]

#: Rows a transfer candidate may be judged on (see :attr:`BaseTransferManager.gate`).
GATES = ("own", "unseen", "selection")

#: A candidate state: a label for the event log, and the state to try.
Candidate = tuple[str, dict[str, Any]]


class BaseTransferManager:
    """Decides knowledge transfer between splits, like a sampler decides parameters.

    A manager owns its algorithm. At each transfer step (:meth:`should_transfer`) of
    every split, :meth:`on_report` gets a :class:`TransferContext` (the K latest
    records, read once; a generator seeded from study seed, split and step) and the
    split's :class:`~optuna_mto._step.handle.SplitHandle`, through which it loads donor
    checkpoints, scores and applies candidates, and records events; it never touches
    storage or Optuna itself. Its per-split state goes into ``handle.state``, which is
    checkpointed and restored with the split (:meth:`relations` shows part of it on
    ``trial.relations``). :meth:`on_split_end` ends a split.

    Every hook is declared here with a default, so a subclass overrides only what it
    changes. The default :meth:`on_report` is a single-donor transfer in named steps:
    :meth:`choose_donor` (which split; by default none, so a manager that overrides
    nothing never transfers), :meth:`candidates` (the transfer operator), :meth:`accept`
    (the acceptance rule, on the rows named by :attr:`gate`), :meth:`explore` and
    :meth:`explore_hparams` (what to change after a kept transfer). Subclasses return
    their constructor arguments from :meth:`get_params` so that every worker of a
    study rebuilds the same manager.

    A manager may keep *companion models* beside a split's own, between reports:
    :class:`~optuna_mto.transfer.Companion` objects it puts in ``handle.companions``
    (by name) in its hooks and judges, replaces or drops there (AMTO's explorer, a
    teacher). The objective trains those with ``train=True`` after each of its own
    epochs (``trial.train_companions``; :class:`~optuna_mto.SupervisedTrainer` does)
    without knowing the strategy; :attr:`has_trainable_companions` declares it up front
    (a framework callback, which trains one model only, refuses such a manager), and
    the default :meth:`on_split_end` drops them.

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
    def has_trainable_companions(self) -> bool:
        """True if the objective must train companion models between reports.

        Read before any split starts: ``optimize`` refuses such a manager with a
        framework callback that trains one model only. Default False.
        """
        return False

    @property
    def uses_explorer(self) -> bool:
        """Former name of :attr:`has_trainable_companions` (kept for compatibility)."""
        return self.has_trainable_companions

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

        Called by ``trial.report`` at every report step where :meth:`should_transfer`
        is True, after the objective trained the split's model (and its companions)
        and before the step is checkpointed and published. The default is
        :func:`transfer_once`. The event's ``accepted`` says whether the split's
        weights were replaced; the report then publishes ``event.after`` as the split's
        fitness (when judged on its own validation set) or scores the new weights again.
        """
        return transfer_once(self, context, handle)

    def on_split_end(self, handle: SplitHandle) -> None:
        """Called once when the split's objective has returned (or was pruned).

        Default: drop every companion model (``handle.companions``).
        """
        handle.companions.clear()

    def choose_donor(self, context: TransferContext) -> int | None:
        """Return the split to pull weights from, or None to skip this step.

        Called by the default :meth:`on_report` at each transfer step. Default: None,
        never transfer.
        """
        return None

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

    def explore_hparams(
        self,
        values: Mapping[str, Any],
        distributions: Mapping[str, BaseDistribution],
        context: TransferContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Change the suggested hyperparameters after an accepted transfer (default: nothing).

        Called after :meth:`explore`, once the donor's values were adopted, when the
        objective suggested any (``trial.suggest_*``); values that are param-group keys
        of the optimizer are set in the kept optimizer state too.

        Args:
            values: The split's current values (after adopting the donor's).
            distributions: The distributions they were suggested from.
            context: The transfer context (its ``rng`` makes the change replayable).

        Returns:
            The new values and the changes, ``name: [old, new]``.
        """
        return dict(values), {}

    def relations(self, state: Mapping[str, Any]) -> dict[int, float]:
        """Return the split's learned relation score of each other split (default: none).

        ``trial.relations`` shows it, read from the split's strategy state
        ``handle.state`` (``state``); a strategy that learns which donors help keeps its
        scores there and reads them back here.
        """
        return {}

    def state_from_checkpoint(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Return the per-split state kept in a checkpoint a split resumes from.

        Called when a retried split resumes; the result becomes ``handle.state``.
        Default: what the checkpoint stored from ``handle.state``, or nothing.
        """
        return dict(checkpoint.get(CHECKPOINT_STRATEGY, {}))

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
