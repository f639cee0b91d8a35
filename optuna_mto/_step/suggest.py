"""The Optuna trial methods of a split trial: ``suggest_*``, params, ``should_prune``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_mto._step.handle import SplitHandle
from optuna_mto._step.hparams import HparamsHook
from optuna_mto._storage.optuna_internals import experimental_func
from optuna_mto._storage.retry import retry_transient

__all__ = ["OptunaTrialMethods"]


class OptunaTrialMethods:
    """Optuna's trial API on a split trial, with a split's hyperparameter semantics.

    A retried or resumed split keeps the values it ran with; a kept transfer or PBT's
    explore changes them (see :class:`~optuna_mto._step.hparams.HyperparamState`).
    """

    _trial: optuna.Trial
    _handle: SplitHandle

    # ------------------------------------------------------------------ hyperparameters
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Suggest a float hyperparameter, as :meth:`optuna.Trial.suggest_float`.

        The study's sampler draws it on the split's first attempt; a retried or resumed
        split gets the value it runs with (never drawn again). That is the value the
        sampler gave, unless a transfer brought a donor's or PBT explored it: the
        trial's ``params`` keep the sampled value, ``current_hparams`` the current one.
        """
        sampled = retry_transient(self._trial.suggest_float, name, low, high, step=step, log=log)
        return self._handle.hparams.suggested(
            name, sampled, FloatDistribution(low, high, log=log, step=step)
        )

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """Suggest an integer hyperparameter, as :meth:`optuna.Trial.suggest_int`.

        See :meth:`suggest_float` for retried splits.
        """
        sampled = retry_transient(self._trial.suggest_int, name, low, high, step=step, log=log)
        return self._handle.hparams.suggested(
            name, sampled, IntDistribution(low, high, log=log, step=step)
        )

    def suggest_categorical(
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        """Suggest a categorical hyperparameter, as :meth:`optuna.Trial.suggest_categorical`.

        See :meth:`suggest_float` for retried splits.
        """
        sampled = retry_transient(self._trial.suggest_categorical, name, choices)
        return self._handle.hparams.suggested(name, sampled, CategoricalDistribution(choices))

    @property
    def params(self) -> dict[str, Any]:
        """The trial's params, as :attr:`optuna.Trial.params`: what the sampler gave.

        They never change; :attr:`current_params` are the values the split runs with.
        """
        return retry_transient(lambda: self._trial.params)

    @property
    def current_params(self) -> dict[str, Any]:
        """The hyperparameters this split runs with now, by name (see :meth:`suggest_float`)."""
        return dict(self._handle.hparams.values)

    @property
    def params_source(self) -> dict[str, Any]:
        """Whose sampled values :attr:`current_params` descend from.

        Keys: ``split`` and ``trial`` (whose draw they are), ``via`` (the donor they came
        through), ``step`` (of the last change) and ``explored`` (changed by PBT).
        """
        return dict(self._handle.hparams.source)

    @experimental_func("0.1.0")
    def on_hparams_change(self, hook: HparamsHook) -> None:
        """Call ``hook(params)`` whenever the split's hyperparameters change.

        They change when a kept transfer brings a donor's hyperparameters, when PBT
        explores them, and when a resumed split restores them. Optimizer param-group
        keys (``lr``, ``momentum``, ...) are updated without a hook; use one for the
        rest, e.g. ``trial.on_hparams_change(lambda p: setattr(drop, "p", p["dropout"]))``.
        """
        self._handle.hparams.add_hook(hook)

    def should_prune(self) -> bool:
        """Ask the study's pruner, as :meth:`optuna.Trial.should_prune`.

        If True, raise :class:`optuna.TrialPruned`: the split ends PRUNED (not FAIL),
        is never retried, is left out of the cross-split ranking, and is no donor from
        then on.
        """
        return bool(retry_transient(self._trial.should_prune))
