"""Resuming a split: its last good checkpoint, and the earlier run's history carried over."""

from __future__ import annotations

import optuna

from optuna_mto._errors import CheckpointError
from optuna_mto._logging import get_logger
from optuna_mto._step.board import SplitRecord
from optuna_mto._step.handle import Shared, SplitHandle
from optuna_mto._step.ledger import CheckpointLedger
from optuna_mto._step.state import check_compatible, set_rng_state, unwrap_model
from optuna_mto._storage.optuna_internals import trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    BAD_CHECKPOINT_ATTR_PREFIX,
    CHECKPOINT_FITNESS,
    CHECKPOINT_HPARAMS,
    CHECKPOINT_LINEAGE,
    CHECKPOINT_MODEL,
    CHECKPOINT_RNG,
    CHECKPOINT_STEP,
    RESUMED_FROM_ATTR,
    RESUMED_FROM_KEY,
    STEP_ATTR_PREFIXES,
)

__all__ = ["carry_history", "resume"]

_logger = get_logger(__name__)


def resume(
    handle: SplitHandle,
    ledger: CheckpointLedger,
    record: SplitRecord,
    shared: Shared,
    trial: optuna.Trial,
) -> int | None:
    """Restore ``handle``'s objects from the earlier run's last good checkpoint.

    Tries the latest checkpoint, then the one before it, then the best one (a missing or
    corrupted checkpoint is skipped, with a warning and a ``bad_checkpoint:<id>`` user
    attribute). Restores model, optimizer, scheduler and RNG state, lineage,
    hyperparameters and the strategy's state (as its ``state_from_checkpoint`` hook
    reads it), takes over the ledger and copies the earlier curve and step records into
    ``trial``.

    Returns:
        The step resumed after, or None when no checkpoint could be loaded.
    """
    candidates = (record.checkpoint, record.previous_checkpoint, record.best_checkpoint)
    for ref in candidates:
        if ref is None:
            continue
        try:
            state = retry_transient(shared.store.load, ref, map_location=handle.device)
        except CheckpointError as err:
            _logger.warning("Split %d: cannot resume from %s: %s", handle.split, ref, err)
            trial.set_user_attr(BAD_CHECKPOINT_ATTR_PREFIX + ref.artifact_id, str(err))
            continue
        assert handle.model is not None
        check_compatible(unwrap_model(handle.model).state_dict(), state[CHECKPOINT_MODEL])
        handle.apply(state)
        if CHECKPOINT_RNG in state:
            set_rng_state(state[CHECKPOINT_RNG], handle.device)
        step = int(state[CHECKPOINT_STEP])
        handle.lineage = [int(s) for s in state.get(CHECKPOINT_LINEAGE, [handle.split])]
        handle.state = shared.manager.state_from_checkpoint(state)
        handle.hparams.restore(state.get(CHECKPOINT_HPARAMS), step)
        handle.hparams.notify()
        best = (record.best_fitness, record.best_step, record.best_checkpoint)
        best_lineage = list(record.best_lineage or handle.lineage)
        if record.best_step > step:  # the best came later than what we resume from
            best, best_lineage = (float(state[CHECKPOINT_FITNESS]), step, ref), list(handle.lineage)
        ledger.resumed(ref, best, best_lineage, step, float(state[CHECKPOINT_FITNESS]))
        carry_history(trial, record.trial_id, step)
        for other in candidates[:2]:
            if other is not None and other not in (ref, best[2]):
                ledger.remove(other)
        _logger.info("Split %d resumes after step %d.", handle.split, step)
        return step
    return None


def carry_history(trial: optuna.Trial, failed_trial_id: int, step: int) -> None:
    """Copy the failed run's curve and per-step records up to ``step`` into ``trial``."""
    storage = trial.storage
    failed = retry_transient(storage.get_trial, failed_trial_id)
    trial_id = trial_id_of(trial)
    # First: a run killed while copying still says where it resumed from.
    retry_transient(storage.set_trial_system_attr, trial_id, RESUMED_FROM_KEY, step)
    for past_step, past_value in sorted(failed.intermediate_values.items()):
        if past_step <= step:
            retry_transient(storage.set_trial_intermediate_value, trial_id, past_step,
                            past_value)  # fmt: skip
    for key, value in failed.user_attrs.items():
        if key.startswith(STEP_ATTR_PREFIXES) and int(key.split(":")[1]) <= step:
            retry_transient(storage.set_trial_user_attr, trial_id, key, value)
    retry_transient(trial.set_user_attr, RESUMED_FROM_ATTR, step)
