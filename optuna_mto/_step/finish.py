"""The end of a split: its best weights scored on every split, kept as an artifact."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from optuna_mto._errors import CheckpointError, NonFiniteScoreError
from optuna_mto._logging import get_logger
from optuna_mto._step.handle import Shared, SplitHandle
from optuna_mto._step.ledger import CheckpointLedger
from optuna_mto._storage.artifacts import promote_checkpoint
from optuna_mto._storage.optuna_internals import trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    BEST_KEY,
    CROSS_SCORES_ATTR,
    CROSS_SCORES_KEY,
    LINEAGE_KEY,
    OVERLAP_KEY,
    PRUNED_KEY,
    SELECTION_SCORE_ATTR,
    SELECTION_SCORE_KEY,
)
from optuna_mto._validation import check_finite_score

__all__ = ["final_value", "finish_split", "finish_pruned"]

_logger = get_logger(__name__)


def finish_split(
    shared: Shared, handle: SplitHandle, ledger: CheckpointLedger, trial: optuna.Trial
) -> tuple[list[float] | None, float | None]:
    """Score the split's best weights on every split's validation set, and keep them.

    Leaves the model holding the best weights, registers their checkpoint as an Optuna
    artifact of the trial, records the cross-split scores, the share of each split's
    validation rows the weights trained on (inherited weights included) and the
    selection score, publishes the finished record and removes every other checkpoint.

    Returns:
        The K cross-split scores (None without an evaluate function) and the selection
        score (None without a selection set).
    """
    shared.manager.on_split_end(handle)
    if handle.model is None or ledger.best is None:
        return None, None
    best_fitness, best_step, best_ref = ledger.best
    store = shared.store
    try:
        handle.apply(retry_transient(store.load, best_ref, map_location=handle.device))
    except CheckpointError as err:
        # Keep the weights in memory and make them the exported best, loadable again.
        _logger.warning("Split %d: best checkpoint unusable (%s); using the current "
                        "weights instead.", handle.split, err)  # fmt: skip
        name = f"{shared.study_name}-split{handle.split}-final"
        best_ref = retry_transient(store.save, handle.capture(), name=name)
    storage, trial_id = trial.storage, trial_id_of(trial)
    # The kept best checkpoint becomes an Optuna artifact (optuna-dashboard lists it), under
    # a new id. The published record may name the old one: it goes after the new record.
    filename = f"{shared.study_name}-split{handle.split}-best-step{best_step}.pt"
    old_best, best_ref = best_ref, promote_checkpoint(store, storage, trial_id, best_ref,
                                                      filename)  # fmt: skip
    ledger.best = (best_fitness, best_step, best_ref)
    plan = shared.plan
    attrs: dict[str, Any] = {
        BEST_KEY: {"fitness": best_fitness, "step": best_step, "checkpoint": best_ref.to_dict()},
        LINEAGE_KEY: ledger.best_lineage,
        OVERLAP_KEY: plan.overlap(ledger.best_lineage),
    }
    scores = selection = None
    if shared.evaluate is not None:
        scores = [handle.evaluate(rows=plan.split(j)[1]) for j in range(shared.n_splits)]
        attrs[CROSS_SCORES_KEY] = scores
        retry_transient(trial.set_user_attr, CROSS_SCORES_ATTR, [round(s, 6) for s in scores])
        if len(plan.selection):
            selection = handle.evaluate(rows=plan.selection)
            attrs[SELECTION_SCORE_KEY] = selection
            retry_transient(trial.set_user_attr, SELECTION_SCORE_ATTR, selection)
    for key, value in attrs.items():
        retry_transient(storage.set_trial_system_attr, trial_id, key, value)
    ledger.publish(best_step, best_fitness, handle.lineage, (handle.tried, handle.accepted),
                   finished=True)  # fmt: skip
    ledger.keep_only(best_ref, old_best)  # only the best from now on (record moved first)
    return scores, selection


def finish_pruned(
    shared: Shared, handle: SplitHandle, ledger: CheckpointLedger, trial: optuna.Trial,
    last_step: int | None,
) -> None:  # fmt: skip
    """End a split the pruner stopped: no donor from now on, every checkpoint removed."""
    shared.manager.on_split_end(handle)
    retry_transient(trial.storage.set_trial_system_attr, trial_id_of(trial), PRUNED_KEY,
                    {"step": last_step})  # fmt: skip
    if ledger.best is None or ledger.latest is None:
        return
    ledger.publish(ledger.best[1], ledger.best[0], handle.lineage,
                   (handle.tried, handle.accepted), finished=True, pruned=True)  # fmt: skip
    ledger.keep_only(None, ledger.best[2])


def final_value(
    split: int, scores: list[float] | None, selection: float | None, returned: Any
) -> tuple[float | None, str | None]:
    """Return the value a finished split's trial is told, or None and why it has none.

    The selection score if the study has a selection set, else the mean cross-split
    score, else the objective's return value. None, NaN or an infinity is the user's
    error (the reason becomes the trial's ``fail_reason``); it is never told to Optuna,
    which would mark the trial FAIL itself, so that the attempt looked like a lost worker.
    """
    if selection is not None:
        value, what = selection, "the final value (its selection score)"
    elif scores:
        value = float(np.mean(scores))
        what = f"the final value (the mean of its cross-split scores {scores})"
    elif returned is not None:
        value, what = float(returned), "the final value (the objective's return value)"
    else:
        return None, (
            "ValueError: the objective returned None and reported no model: return a "
            "value or call trial.report(value, step, model=model) with an evaluate function"
        )
    try:
        return check_finite_score(value, split, what), None
    except NonFiniteScoreError as err:
        return None, f"{type(err).__name__}: {err}"
