"""Transfer that costs nothing when training is healthy: rescue splits that fall behind."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from optuna_mto._validation import check_int, check_number
from optuna_mto.transfer._base import TransferContext, transfer_once
from optuna_mto.transfer._greedy import GreedyTransfer
from optuna_mto.transfer._selection import select_best

if TYPE_CHECKING:
    from optuna_mto._step.events import TransferEvent
    from optuna_mto._step.handle import SplitHandle

__all__ = ["RescueTransfer", "clearly_behind"]

#: Keys of a split's strategy state: its best score, and the step it was reached.
_BEST, _SINCE = "rescue_best", "rescue_since"


def clearly_behind(
    own: float, best: float, n_rows: int, direction: str, z: float, tolerance: float
) -> bool:
    """Return True if a split scoring ``own`` is behind ``best`` by more than noise allows.

    A non-finite ``own`` (a diverged split) is always behind a finite ``best``. For a
    score in [0, 1] that is maximized (accuracy and the like), the noise is the standard
    error of the difference of two proportions measured on ``n_rows`` validation rows
    each, and ``best`` must lead by more than ``z`` of them. For any other score (a
    loss), ``best`` must be better by more than ``tolerance`` relative to its size.

    Args:
        own: The split's own validation score.
        best: The best published score among the other splits.
        n_rows: Validation rows behind each score.
        direction: ``"maximize"`` or ``"minimize"``.
        z: Standard errors a proportion must lead by.
        tolerance: Relative lead for other scores (0.1: 10% better).
    """
    if not math.isfinite(best):
        return False
    if not math.isfinite(own):
        return True
    if direction == "maximize" and 0.0 <= own <= 1.0 and 0.0 <= best <= 1.0:
        noise = math.sqrt((own * (1 - own) + best * (1 - best)) / max(n_rows, 1))
        return best - own > z * max(noise, 1.0 / max(n_rows, 1))
    lead = best - own if direction == "maximize" else own - best
    return lead > tolerance * max(abs(best), 1e-12)


class RescueTransfer(GreedyTransfer):
    """Leave healthy splits independent; give a split that is clearly behind a better one.

    The K splits pay off most as an ensemble of diverse models, and copying weights
    between healthy splits collapses that diversity (their ensemble then adds nothing).
    Under this rule a split takes a donor only when it is *clearly behind*: diverged
    (a non-finite score), or *stalled* (no gain beyond noise over its best score for
    ``patience`` looks) while the best other split leads it by more than the sampling
    noise of its validation set allows (:func:`clearly_behind`). A split that trails
    but still learns (early in training the splits learn at different paces) is left
    alone: copying it then costs diversity and buys nothing. The best split's
    weights are then judged on the receiver's validation rows that neither lineage
    trained on (``gate="unseen"``) and kept only if they score better there. Those rows
    run out as lineages mix (after one or two transfers, few or no validation rows are
    unseen by both): with fewer than ``min_gate_rows`` of them the weights are judged
    on the receiver's whole validation set instead (the event's ``judged_on`` says
    which). Stalled or diverged training is rescued as by :class:`GreedyTransfer`; a
    healthy
    population trains as independent splits would, at the cost of nothing but a
    comparison of published numbers at each step.

    This is the default strategy of :func:`optuna_mto.create_study`.

    Example:
        >>> from optuna_mto.transfer import RescueTransfer, clearly_behind
        >>> RescueTransfer().patience, RescueTransfer().lr_factor
        (2, 0.5)
        >>> clearly_behind(0.80, 0.92, 300, "maximize", z=3.0, tolerance=0.1)
        True

    Args:
        interval: Report steps between looks.
        warmup: First report step with a look.
        patience: Looks without a gain beyond noise after which a split counts as
            stalled (a diverged split is rescued at once). The default 2 leaves alone
            a split that pauses for one look early in training and then learns on.
        z: How many standard errors of the difference an accuracy-like score (in
            [0, 1], maximized) must trail the best other split by.
        tolerance: For other scores (losses): the relative lead of the best other
            split that counts as clearly ahead (0.1: 10% better).
        copy_optimizer: Also take the donor's optimizer (and LR scheduler) state.
        gate: Rows the donor's weights are judged on (see :class:`GreedyTransfer`).
        min_gate_rows: With ``gate="unseen"``: the fewest unseen rows that judge a
            donor; with fewer, the receiver's own validation rows judge it.
        lr_factor: A rescued split trains on from the donor's weights and optimizer
            state with the learning rate times this (every param group's ``lr``): a
            split that stalled or diverged at the donor's rate would likely do so
            again, as in ``ReduceLROnPlateau``. 1.0 keeps the donor's rate.
        synchronous: Wait for the other splits at each transfer step.
        sync_timeout: Longest wait in seconds in synchronous mode.
    """

    def __init__(
        self,
        *,
        interval: int = 1,
        warmup: int = 1,
        patience: int = 2,
        z: float = 3.0,
        tolerance: float = 0.1,
        copy_optimizer: bool = True,
        gate: str = "unseen",
        min_gate_rows: int = 30,
        lr_factor: float = 0.5,
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        super().__init__(
            interval=interval, warmup=warmup, copy_optimizer=copy_optimizer, gate=gate,
            synchronous=synchronous, sync_timeout=sync_timeout,
        )  # fmt: skip
        check_int("patience", patience, 1)
        check_int("min_gate_rows", min_gate_rows, 0)
        check_number("lr_factor", lr_factor, 0, 1, low_open=True)
        check_number("z", z, 0)
        check_number("tolerance", tolerance, 0)
        self.patience = patience
        self.z = float(z)
        self.tolerance = float(tolerance)
        self.min_gate_rows = min_gate_rows
        self.lr_factor = float(lr_factor)

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        """Transfer only if the split has diverged, or stalled clearly behind the best."""
        n_rows = len(handle.valid_indices)
        stalled = self._stalled(context, handle.state, n_rows)
        donor = select_best(context.others, context.direction)
        if donor is None:
            return None
        own, best = context.fitness, context.others[donor]
        diverged = not math.isfinite(own)
        behind = clearly_behind(own, best, n_rows, context.direction, self.z, self.tolerance)
        if not behind or not (diverged or stalled) or donor not in context.records:
            return None
        event = transfer_once(self, context, handle, donor, self._gate(handle, donor, context))
        if event is not None and event.accepted:  # a new start: patience begins again
            handle.state.pop(_BEST, None)
            handle.state[_SINCE] = context.step
        return event

    def explore(
        self, optimizer_state: dict[str, Any], context: TransferContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Scale the rescued split's learning rate by ``lr_factor``; return the change."""
        groups = optimizer_state.get("param_groups", [])
        if self.lr_factor == 1.0 or not groups or "lr" not in groups[0]:
            return optimizer_state, {}
        groups = [{**g, "lr": g["lr"] * self.lr_factor} for g in groups]
        return {**optimizer_state, "param_groups": groups}, {"lr": float(groups[0]["lr"])}

    def _gate(self, handle: SplitHandle, donor: int, context: TransferContext) -> str:
        """Return the gate to judge ``donor`` on: ``"own"`` when too few rows are unseen."""
        if self.gate != "unseen":
            return self.gate
        lineage = context.records[donor].lineage or [donor]
        rows = handle.gate_rows("unseen", lineage)
        return "unseen" if rows is not None and len(rows) >= self.min_gate_rows else "own"

    def _stalled(self, context: TransferContext, state: dict[str, Any], n_rows: int) -> bool:
        """Track the split's best score; True after ``patience`` looks without a real gain.

        A gain counts when the new score leads the best so far by one standard error
        (accuracies) or a quarter of ``tolerance`` (other scores).
        """
        own, best = context.fitness, state.get(_BEST)
        gained = math.isfinite(own) and (
            best is None
            or clearly_behind(best, own, n_rows, context.direction, 1.0, self.tolerance / 4)
        )
        if gained:
            state.update({_BEST: own, _SINCE: context.step})
        since = state.get(_SINCE, context.step)
        looks = (context.step - since) // self.interval
        return looks >= self.patience

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        params = {
            "name": type(self).__name__,
            "interval": self.interval,
            "warmup": self.warmup,
            "patience": self.patience,
            "z": self.z,
            "tolerance": self.tolerance,
            "copy_optimizer": self.copy_optimizer,
            "gate": self.gate,
            "min_gate_rows": self.min_gate_rows,
            "lr_factor": self.lr_factor,
        }
        if self.synchronous:
            params.update(synchronous=True, sync_timeout=self.sync_timeout)
        return params
