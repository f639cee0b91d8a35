"""Companion models: models a transfer strategy keeps beside a split's own.

A strategy may need more than the split's model between two reports: AMTO trains an
*explorer* (a donor's copy) on the split's data, a distillation strategy would keep a
*teacher*. It creates, replaces, judges and drops such models in its own hooks, keeping
them in ``handle.companions`` by name; the objective only sees
:attr:`SplitTrial.companions <optuna_mto.SplitTrial.companions>` and trains those whose
``train`` is True (:func:`train_companions`), without knowing which strategy made them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["Companion", "train_companions"]


@dataclasses.dataclass
class Companion:
    """A model a transfer strategy keeps beside the split's own, until it drops it.

    Attributes:
        model: The companion's model (on the trial's device).
        optimizer: Its optimizer, if the objective trains it.
        scheduler: Its LR scheduler, if any (stepped once per companion epoch).
        train: Whether the objective trains it between reports, after each epoch of the
            split's own model (an explorer: True; a frozen teacher: False).
    """

    model: torch.nn.Module
    optimizer: Any = None
    scheduler: Any = None
    train: bool = dataclasses.field(default=True, kw_only=True)


def train_companions(
    companions: Mapping[str, Companion],
    train_fn: Callable[..., Any],
    generator: torch.Generator | None = None,
) -> int:
    """Train every companion whose ``train`` is True for one epoch, in name order.

    Call it after each epoch of the split's own model, before the report that may judge
    the companions. Each companion's scheduler, if any, is stepped after its epoch.

    Args:
        companions: The trial's companions (:attr:`SplitTrial.companions`).
        train_fn: ``train_fn(model, optimizer)`` trains one epoch; with ``generator``,
            ``train_fn(model, optimizer, companion_generator)``.
        generator: The generator that shuffled the own model's epoch: the ``i``-th
            trained companion gets a new generator seeded ``generator.initial_seed() +
            1 + i`` (replayable, and different from the own model's order).

    Returns:
        The number of companion epochs trained.
    """
    trained = 0
    for name in sorted(companions):
        companion = companions[name]
        if not companion.train:
            continue
        if generator is None:
            train_fn(companion.model, companion.optimizer)
        else:
            seed = generator.initial_seed() + 1 + trained
            train_fn(companion.model, companion.optimizer, torch.Generator().manual_seed(seed))
        if companion.scheduler is not None:
            companion.scheduler.step()
        trained += 1
    return trained
