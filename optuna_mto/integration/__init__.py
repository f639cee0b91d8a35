"""Integrations of optuna-mto with training frameworks.

``MTOCallback`` turns a PyTorch Lightning training into a split trial. Lightning is an
optional dependency (``pip install 'optuna-mto[lightning]'``); it is imported only when
``MTOCallback`` is first used, so importing this package never needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna_mto.integration._lightning import MTOCallback, trainer_device_kwargs

__all__ = ["MTOCallback", "trainer_device_kwargs"]

_LAZY = {
    "MTOCallback": "optuna_mto.integration._lightning",
    "trainer_device_kwargs": "optuna_mto.integration._lightning",
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
