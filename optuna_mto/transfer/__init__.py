"""Transfer managers: when and how splits exchange weights.

Pick one the way you pick an Optuna sampler and pass it to
``optuna_mto.create_study(transfer=...)``.
"""

from __future__ import annotations

from typing import Any

from optuna_mto._step.handle import SplitHandle
from optuna_mto.transfer._adaptive import (
    AdaptiveTransfer,
    Explorer,
    softmax_select,
    update_relation,
)
from optuna_mto.transfer._average import AveragingTransfer, pull_toward_average
from optuna_mto.transfer._base import BaseTransferManager, Candidate, TransferContext
from optuna_mto.transfer._companion import Companion, train_companions
from optuna_mto.transfer._greedy import GreedyTransfer, NoTransfer
from optuna_mto.transfer._interpolate import InterpolateTransfer, interpolate_state
from optuna_mto.transfer._pbt import PBTTransfer, explore_value
from optuna_mto.transfer._rescue import RescueTransfer, clearly_behind
from optuna_mto.transfer._selection import (
    is_better,
    is_better_by,
    select_best,
    select_tournament,
    select_uniform,
    truncation_donors,
)

__all__ = [
    "AdaptiveTransfer",
    "AveragingTransfer",
    "BaseTransferManager",
    "Candidate",
    "Companion",
    "Explorer",
    "GreedyTransfer",
    "InterpolateTransfer",
    "NoTransfer",
    "PBTTransfer",
    "RescueTransfer",
    "SplitHandle",
    "TransferContext",
    "clearly_behind",
    "explore_value",
    "interpolate_state",
    "is_better",
    "is_better_by",
    "pull_toward_average",
    "select_best",
    "select_tournament",
    "select_uniform",
    "softmax_select",
    "train_companions",
    "truncation_donors",
    "update_relation",
]

_BUILTIN: dict[str, type[BaseTransferManager]] = {
    cls.__name__: cls
    for cls in (
        AdaptiveTransfer,
        AveragingTransfer,
        GreedyTransfer,
        InterpolateTransfer,
        NoTransfer,
        PBTTransfer,
        RescueTransfer,
    )
}


def from_params(params: dict[str, Any]) -> BaseTransferManager:
    """Rebuild a built-in manager from its ``get_params()`` output.

    Raises:
        ValueError: For a custom manager class, which cannot be rebuilt by name:
            pass the same instance to ``load_study(transfer=...)``.
    """
    params = dict(params)
    name = params.pop("name", "GreedyTransfer")
    if name not in _BUILTIN:
        raise ValueError(
            f"The study was created with the custom transfer manager {name!r}; pass an "
            f"instance of it with the same parameters as load_study(..., transfer=...)."
        )
    return _BUILTIN[name](**params)
