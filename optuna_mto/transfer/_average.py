"""Population averaging (PAPA): pull every split's weights toward the population's mean."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from optuna_mto._step.events import TransferEvent
from optuna_mto._storage.schema import CHECKPOINT_MODEL, CHECKPOINT_STRATEGY
from optuna_mto._validation import check_number
from optuna_mto.transfer._base import BaseTransferManager, TransferContext
from optuna_mto.transfer._interpolate import interpolate_state
from optuna_mto.transfer._selection import select_best

if TYPE_CHECKING:
    from optuna_mto._step.handle import SplitHandle

__all__ = ["AveragingTransfer", "pull_toward_average"]

#: Key of a split's strategy state: the shared start its weights descend from, as
#: ``[rank, split]``: the start split's score at its first look (negated when maximizing,
#: ``inf`` when not finite) and its index. The lowest rank is the population's start.
_START = "average_start"

Start = tuple[float, int]


def pull_toward_average(
    own: Mapping[str, torch.Tensor], others: Sequence[Mapping[str, torch.Tensor]], rate: float
) -> dict[str, torch.Tensor]:
    """Return ``(1 - rate) * own + rate * mean(own, *others)`` for floating tensors.

    Integer buffers (such as BatchNorm's ``num_batches_tracked``) are the receiver's,
    unchanged. ``rate=1`` replaces the floating tensors by the mean (PAPA-all).
    """
    mean = dict(own)
    for count, other in enumerate(others, start=2):  # running mean: m += (x - m) / n
        mean = interpolate_state(mean, dict(other), 1.0 / count)
    return interpolate_state(dict(own), mean, rate)


class AveragingTransfer(BaseTransferManager):
    """Population averaging (PAPA, Jolicoeur-Martineau et al., TMLR 2024).

    The K splits train in parallel, each on its own rows; every ``interval`` report
    steps each split's weights are pulled toward the population's average:
    ``w <- (1 - rate) * w + rate * mean(population)``, the population being the
    latest published weights of every split of the same start, its own current weights
    included (asynchronous: whatever each split last published; splits with a
    non-finite score are left out). ``rate=1.0`` replaces the weights by the average
    (PAPA-all). Only floating tensors are averaged; integer buffers, the optimizer
    and the learning-rate scheduler stay the receiver's. The final output is the
    uniform soup of the K models (:attr:`default_output`): one model, often better than
    each member.

    Averaging networks from different random initialisations is meaningless, so the
    population first gets a shared start. At its first look (step ``warmup``) a split
    ranks itself by its score; a split whose own start ranks below the best start among
    the published splits takes the weights of that start's best-scoring split (keeping
    its own optimizer state), and from then on averages only with splits of its start.
    Once a split of some start has finished, the best finished start is the one to join
    (a finished split cannot move). A start is ranked once and for all, so two running
    splits never take each other's weights at once, whatever the timing, and the models
    end with one shared start and a shared lineage, which
    :meth:`~optuna_mto.MTOStudy.soup` requires. Splits whose first looks come at once
    join at their next look: run at least ``warmup + interval + 1`` report steps.

    Every shared start (operator ``"shared-start"``) and every averaging (operator
    ``"average:<donors>"``, e.g. ``"average:0+2"``; ``donor`` is the best of them) is
    recorded as an accepted transfer event, scored on the receiver's validation rows.

    Use it when one model will be deployed and K times the inference cost of the
    ensemble is not affordable. Averaging pulls the K models together: the ensemble of
    the K models gains less over its members than after independent training.

    Example:
        >>> from optuna_mto.transfer import AveragingTransfer
        >>> AveragingTransfer(interval=2, rate=1.0).get_params()
        {'name': 'AveragingTransfer', 'interval': 2, 'warmup': 1, 'rate': 1.0}

    Args:
        interval: Report steps between averagings.
        warmup: First report step with a look (the shared start).
        rate: Pull toward the average, in (0, 1]; 1.0 replaces the weights by it.
        synchronous: Wait for the other splits at each look (see
            :class:`BaseTransferManager`).
        sync_timeout: Longest wait in seconds in synchronous mode.
    """

    #: The uniform soup: the K models' weights averaged into one model.
    default_output = "uniform_soup"

    def __init__(
        self,
        *,
        interval: int = 1,
        warmup: int = 1,
        rate: float = 0.5,
        synchronous: bool = False,
        sync_timeout: float = 300.0,
    ) -> None:
        super().__init__(
            interval=interval, warmup=warmup, synchronous=synchronous, sync_timeout=sync_timeout
        )
        check_number("rate", rate, 0, 1, low_open=True)
        self.rate = float(rate)

    def choose_donor(self, context: TransferContext) -> int | None:
        """Return the best-scoring other split (a shared start's donor, among its start)."""
        return select_best(context.others, context.direction)

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        """Join the population's shared start, or pull the weights toward its average."""
        peers = {k: r for k, r in context.records.items() if math.isfinite(r.fitness)}
        models: dict[int, dict[str, torch.Tensor]] = {}
        starts: dict[int, Start] = {}
        for k, record in sorted(peers.items()):
            donor_state = handle.load_donor(record)
            if isinstance(donor_state, str):
                continue  # gone or unreadable: not part of this look
            start = (donor_state.get(CHECKPOINT_STRATEGY) or {}).get(_START)
            if start is not None:  # a split before its first look has no start yet
                models[k], starts[k] = donor_state[CHECKPOINT_MODEL], _as_start(start)
        mine = self._own_start(context, handle)
        finished = {starts[k] for k in starts if peers[k].finished}
        target = min(finished or {*starts.values(), mine})
        if target != mine:
            members = {k: context.others[k] for k in starts if starts[k] == target}
            donor = self.choose_donor(context.replace(others=members))
            assert donor is not None
            handle.state[_START] = list(target)
            return _take(context, handle, models[donor], [donor], "shared-start")
        handle.state[_START] = list(mine)
        group = sorted(k for k in starts if starts[k] == mine)
        if not group:
            return None
        theirs = [models[k] for k in group]
        if math.isfinite(context.fitness):
            own = handle.capture(clone=False)[CHECKPOINT_MODEL]
            averaged = pull_toward_average(own, theirs, self.rate)
        else:  # a diverged split takes the others' average
            averaged = pull_toward_average(theirs[0], theirs[1:], 1.0)
        return _take(context, handle, averaged, group, "average:" + "+".join(map(str, group)))

    def _own_start(self, context: TransferContext, handle: SplitHandle) -> Start:
        """The split's start; at its first look, itself, ranked by its score."""
        if _START in handle.state:
            return _as_start(handle.state[_START])
        sign = -1.0 if context.direction == "maximize" else 1.0
        rank = sign * context.fitness if math.isfinite(context.fitness) else math.inf
        return rank, handle.split

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        params = super().get_params()
        sync = {k: params.pop(k) for k in ("synchronous", "sync_timeout") if k in params}
        return {**params, "rate": self.rate, **sync}


def _as_start(value: Sequence[Any]) -> Start:
    return float(value[0]), int(value[1])


def _take(
    context: TransferContext,
    handle: SplitHandle,
    weights: dict[str, torch.Tensor],
    donors: list[int],
    operator: str,
) -> TransferEvent:
    """Load ``weights`` (the optimizer stays), inherit the donors' lineages, record it."""
    handle.apply({CHECKPOINT_MODEL: weights})
    after = handle.evaluate()
    for k in donors:
        handle.inherit(context.records[k].lineage or [k])
    best = select_best({k: context.others[k] for k in donors}, context.direction)
    record = context.records[donors[0] if best is None else best]  # the best donor
    event = TransferEvent(
        context.step, handle.split, record.split, record.trial_number, record.step,
        operator, context.fitness, after, True,
    )  # fmt: skip
    return handle.record(event)
