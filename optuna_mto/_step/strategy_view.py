"""What a split trial shows of its transfer strategy: companion models and relation scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from optuna_mto.transfer._companion import Companion, train_companions

if TYPE_CHECKING:
    from optuna_mto._step.handle import Shared, SplitHandle

__all__ = ["StrategyView"]


class StrategyView:
    """The strategy-dependent part of a split trial, the same for every strategy."""

    _shared: Shared
    _handle: SplitHandle

    @property
    def companions(self) -> dict[str, Companion]:
        """Models the transfer strategy keeps beside this split's, by name (may be empty).

        A strategy may keep companion models (:class:`~optuna_mto.transfer.Companion`)
        between reports: ``AdaptiveTransfer``'s ``"explorer"``, a teacher. Train every
        one whose ``train`` is True after each epoch of your own model, with
        :meth:`train_companions` (``SupervisedTrainer`` does); the next report may judge
        them. The dict changes at reports: read it again after each one.
        """
        return self._handle.companions

    @property
    def explorer(self) -> Companion | None:
        """``companions.get("explorer")``: ``AdaptiveTransfer``'s explorer, or None.

        Kept for objectives written before companions; :meth:`train_companions` trains
        it with any other companion.
        """
        return self._handle.companions.get("explorer")

    @property
    def relations(self) -> dict[int, float]:
        """This split's learned relation score of each other split (empty if none).

        What the strategy's ``relations`` hook reads from its per-split state
        (``AdaptiveTransfer``'s relation scores).
        """
        return self._shared.manager.relations(self._handle.state)

    def train_companions(
        self, train_fn: Callable[..., Any], generator: torch.Generator | None = None
    ) -> int:
        """Train every companion whose ``train`` is True for one epoch; return how many.

        Call it after each epoch of your own model, before :meth:`report`; it does
        nothing when the strategy keeps no companion. Each companion's scheduler is
        stepped after its epoch.

        Args:
            train_fn: ``train_fn(model, optimizer)`` trains one epoch on
                :attr:`train_indices`; with ``generator``,
                ``train_fn(model, optimizer, generator)``.
            generator: The generator that shuffled your own epoch; each companion gets
                its own, seeded from it (see
                :func:`~optuna_mto.transfer.train_companions`).
        """
        return train_companions(self._handle.companions, train_fn, generator)
