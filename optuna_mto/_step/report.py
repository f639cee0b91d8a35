"""One report step as a pipeline: record, board, strategy, ledger.

``SplitTrial.report`` checks its arguments and calls :func:`report_step`, which runs

1. record   -- the value becomes the trial's intermediate value (Optuna's curves);
2. board    -- at a transfer step, the K latest records (one read of ``mto_board``;
               in synchronous mode after waiting for the others, see ``_board``);
3. strategy -- ``manager.on_report(context, handle)``: the transfer strategy's own
               algorithm, acting through the split's :class:`SplitHandle`;
4. ledger   -- checkpoint the (possibly replaced) weights, keep latest/previous/best,
               publish the split's record for the others.
"""

from __future__ import annotations

import numpy as np
import optuna

from optuna_mto._step.board import SplitRecord, wait_for_step
from optuna_mto._step.events import ReportResult
from optuna_mto._step.handle import Shared, SplitHandle
from optuna_mto._step.ledger import CheckpointLedger
from optuna_mto._step.state import get_rng_state
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    CHECKPOINT_FITNESS,
    CHECKPOINT_HPARAMS,
    CHECKPOINT_LINEAGE,
    CHECKPOINT_RNG,
    CHECKPOINT_STEP,
    CHECKPOINT_STRATEGY,
)
from optuna_mto.transfer import TransferContext

__all__ = ["report_step"]


def report_step(
    shared: Shared,
    handle: SplitHandle,
    ledger: CheckpointLedger,
    trial: optuna.Trial,
    value: float,
    step: int,
    *,
    with_model: bool = True,
) -> ReportResult:
    """Run the report pipeline; without a model only the value is recorded."""
    retry_transient(trial.report, value, step)
    if not with_model:
        return ReportResult(step, value, None, None)
    fitness, event = value, None
    manager = shared.manager
    if manager.should_transfer(step) and shared.evaluate is not None:
        records = _read_board(shared, handle.split, step)
        event = manager.on_report(_context(shared, handle, step, value, records), handle)
        fitness = handle.fitness_after(value, event)
    ref = ledger.save(_checkpoint_state(handle, step, fitness), step, fitness, handle.lineage)
    ledger.publish(step, fitness, handle.lineage, (handle.tried, handle.accepted))
    return ReportResult(step, fitness, event, ref)


def _read_board(shared: Shared, split: int, step: int) -> dict[int, SplitRecord]:
    if not shared.manager.synchronous:
        return retry_transient(shared.board.read)
    return wait_for_step(shared.board, split, step, shared.n_splits,
                         shared.manager.sync_timeout, shared.stop)  # fmt: skip


def _context(
    shared: Shared, handle: SplitHandle, step: int, value: float, records: dict[int, SplitRecord]
) -> TransferContext:
    # A pruned split is no donor: its run was judged hopeless.
    donors = {k: r for k, r in records.items() if k != handle.split and not r.pruned}
    return TransferContext(
        handle.split, step, value, shared.direction, {k: r.fitness for k, r in donors.items()},
        np.random.default_rng([shared.seed, handle.split, step]),
        hparams=handle.hparams.values, records=donors,
    )  # fmt: skip


def _checkpoint_state(handle: SplitHandle, step: int, fitness: float) -> dict[str, object]:
    # Serialised right away, so the live tensors need no copy.
    state = handle.capture(clone=False)
    state.update({CHECKPOINT_STEP: step, CHECKPOINT_FITNESS: fitness,
                  CHECKPOINT_RNG: get_rng_state(handle.device),
                  CHECKPOINT_LINEAGE: list(handle.lineage)})  # fmt: skip
    if handle.state:
        state[CHECKPOINT_STRATEGY] = handle.state
    if handle.hparams.values:
        state[CHECKPOINT_HPARAMS] = handle.hparams.to_checkpoint()
    return state
