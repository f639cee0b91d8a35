"""The default strategy: copy the weights of a better split, keep them if they help."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from optuna_mto._storage.schema import CHECKPOINT_MODEL
from optuna_mto._validation import check_int, check_number
from optuna_mto.transfer._base import GATES, BaseTransferManager, Candidate, TransferContext
from optuna_mto.transfer._selection import (
    is_better,
    is_better_by,
    select_best,
    select_tournament,
    select_uniform,
    truncation_donors,
)

__all__ = ["GreedyTransfer", "NoTransfer"]

_DONOR_RULES = ("best", "tournament", "uniform")


class GreedyTransfer(BaseTransferManager):
    """Greedy knowledge transfer between splits (the paper's basic MTO step).

    At report steps ``warmup, warmup + interval, ...``, the receiver picks a donor
    among the other splits by their latest published fitness, copies the donor's
    weights (and optimizer state), scores that candidate on its own validation set,
    and keeps it only if it beats its own score.

    Example:
        >>> from optuna_mto.transfer import GreedyTransfer
        >>> manager = GreedyTransfer(interval=2, truncation=0.25, gate="unseen")
        >>> [step for step in range(7) if manager.should_transfer(step)]
        [2, 4, 6]

    Args:
        interval: Report steps between transfer attempts.
        warmup: First report step at which a transfer is attempted; default ``interval``
            (``interval=20`` transfers at steps 20, 40, ...).
        donor: ``"best"`` (other split with the best latest fitness),
            ``"tournament"`` (best of ``tournament_size`` drawn at random) or
            ``"uniform"`` (any other split at random).
        only_better: Skip the attempt unless the donor's published fitness beats the
            receiver's own (saves an evaluation when no donor looks better).
        copy_optimizer: Also take the donor's optimizer (and LR scheduler) state.
        tournament_size: Number of splits drawn by the ``"tournament"`` rule.
        truncation: PBT-style truncation, e.g. 0.25: only a split in the bottom quantile
            of the population may copy, and only from the top quantile (None: any split
            may copy from any better one, which tends to collapse the population).
        margin: Keep a candidate only if it beats the receiver by more than this
            (in the metric's units; 0 keeps any strict improvement).
        gate: Rows a candidate is judged on: ``"own"`` (the receiver's validation set,
            as in the paper; the donor has trained on most of it), ``"unseen"`` (the
            receiver's validation rows that neither model's lineage trained on) or
            ``"selection"`` (the held-out selection set; it then also steers training,
            so the selection ranking becomes optimistic).
        synchronous: Wait for the other splits at each transfer step (see
            :class:`BaseTransferManager`).
        sync_timeout: Longest wait in seconds in synchronous mode.
    """

    def __init__(
        self,
        *,
        interval: int = 1,
        warmup: int | None = None,
        donor: str = "best",
        only_better: bool = True,
        copy_optimizer: bool = True,
        tournament_size: int = 2,
        truncation: float | None = None,
        margin: float = 0.0,
        gate: str = "own",
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        super().__init__(
            interval=interval, warmup=warmup, synchronous=synchronous, sync_timeout=sync_timeout
        )
        if truncation is not None:
            check_number("truncation", truncation, 0, 0.5, low_open=True)
        check_number("margin", margin, 0)
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, but got gate={gate!r}.")
        self.truncation = None if truncation is None else float(truncation)
        self.margin = float(margin)
        self.gate = gate
        if donor not in _DONOR_RULES:
            raise ValueError(f"donor must be one of {_DONOR_RULES}, but got donor={donor!r}.")
        check_int("tournament_size", tournament_size, 1)
        self.donor = donor
        self.only_better = bool(only_better)
        self.copy_optimizer = bool(copy_optimizer)
        self.tournament_size = tournament_size

    def choose_donor(self, context: TransferContext) -> int | None:
        """Pick a donor by the configured rule; None if none qualifies."""
        others = context.others
        if self.truncation is not None:
            allowed = truncation_donors(
                others, context.receiver, context.fitness, self.truncation, context.direction
            )
            others = {k: others[k] for k in allowed}
        if self.donor == "best":
            donor = select_best(others, context.direction)
        elif self.donor == "tournament":
            donor = select_tournament(others, context.direction, context.rng, self.tournament_size)
        else:
            donor = select_uniform(others, context.rng)
        if donor is None:
            return None
        if self.only_better and not is_better(others[donor], context.fitness, context.direction):
            return None
        return donor

    def accept(self, before: float, after: float, direction: str) -> bool:
        """Keep a candidate that beats the receiver by more than ``margin``."""
        return is_better_by(after, before, self.margin, direction)

    def candidates(
        self, own: dict[str, Any], donor: dict[str, Any], context: TransferContext
    ) -> Iterator[Candidate]:
        """Yield the donor's state; with ``copy_optimizer=False`` keep the own optimizer."""
        if self.copy_optimizer:
            yield "copy", donor
        else:
            keep = {k: v for k, v in own.items() if k != CHECKPOINT_MODEL}
            yield "copy-weights", {**keep, CHECKPOINT_MODEL: donor[CHECKPOINT_MODEL]}

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "donor": self.donor,
            "only_better": self.only_better,
            "copy_optimizer": self.copy_optimizer,
            "tournament_size": self.tournament_size,
            **({"truncation": self.truncation} if self.truncation is not None else {}),
            **({"margin": self.margin} if self.margin else {}),
            **({"gate": self.gate} if self.gate != "own" else {}),
        }


class NoTransfer(BaseTransferManager):
    """Independent training: splits publish checkpoints but never pull weights.

    Example:
        >>> from optuna_mto.transfer import NoTransfer
        >>> NoTransfer().enabled  # create_study(transfer=NoTransfer()): independent splits
        False
    """

    @property
    def enabled(self) -> bool:
        """Always False."""
        return False

    def choose_donor(self, context: TransferContext) -> int | None:
        """Never choose a donor."""
        return None
