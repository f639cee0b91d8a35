"""What the tracker callbacks share: numeric values, the split of a trial, pickling."""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from optuna_mto._step.events import ReportResult
from optuna_mto._storage.schema import CURRENT_HPARAMS_ATTR, SPLIT_KEY, SPLIT_PARAM

__all__ = ["STATUS", "numeric", "report_metrics", "split_of"]

#: Trial state -> how a tracker calls a run that ended so.
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """Return the finite int / float entries of ``values`` as floats (bools excluded)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def report_metrics(result: ReportResult, params: dict[str, Any], name: str) -> dict[str, float]:
    """Return the metrics of one report: the fitness, transfer outcome, current hparams."""
    metrics = {name: float(result.fitness)}
    if result.transfer is not None and not result.transfer.reason:
        metrics["transfer_accepted"] = float(result.transfer.accepted)
    metrics.update({f"hparams/{k}": v for k, v in numeric(params).items()})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def split_of(trial: FrozenTrial) -> int | None:
    """Return the split a trial ran (None for a trial optuna-mto did not make)."""
    split = trial.system_attrs.get(SPLIT_KEY)
    return None if split is None else int(split)


def current_params(trial: FrozenTrial) -> dict[str, Any]:
    """Return the hyperparameters the split ended with (its sampled params if none changed)."""
    sampled = {k: v for k, v in trial.params.items() if k != SPLIT_PARAM}
    return {**sampled, **trial.user_attrs.get(CURRENT_HPARAMS_ATTR, {})}
