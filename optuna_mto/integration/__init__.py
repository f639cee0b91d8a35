"""Integrations of optuna-mto with training frameworks and experiment trackers.

``MTOCallback`` turns a PyTorch Lightning training into a split trial,
``MTOTrainerCallback`` a Hugging Face ``transformers.Trainer`` one; ``MLflowCallback``
and ``TensorBoardCallback`` log each split as a run (pass them to
``MTOStudy.optimize(callbacks=[...])``). Each needs an optional dependency (extras
``lightning``, ``transformers``, ``mlflow``, ``tensorboard``), imported only when the
name is first used, so importing this package never needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna_mto.integration._lightning import MTOCallback, trainer_device_kwargs
    from optuna_mto.integration._mlflow import MLflowCallback
    from optuna_mto.integration._tensorboard import TensorBoardCallback
    from optuna_mto.integration._transformers import MTOTrainerCallback

__all__ = [
    "MLflowCallback",
    "MTOCallback",
    "MTOTrainerCallback",
    "TensorBoardCallback",
    "trainer_device_kwargs",
]

_LAZY = {
    "MTOCallback": "optuna_mto.integration._lightning",
    "trainer_device_kwargs": "optuna_mto.integration._lightning",
    "MLflowCallback": "optuna_mto.integration._mlflow",
    "TensorBoardCallback": "optuna_mto.integration._tensorboard",
    "MTOTrainerCallback": "optuna_mto.integration._transformers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
