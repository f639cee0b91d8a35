"""Population-based exploration: copy a better split, then perturb its hyperparameters."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from optuna_mto.transfer._base import TransferContext
from optuna_mto.transfer._greedy import GreedyTransfer

__all__ = ["PBTTransfer", "explore_value"]


def explore_value(
    value: float,
    distribution: BaseDistribution,
    rng: np.random.Generator,
    factors: Sequence[float],
    resample_probability: float,
) -> float:
    """Perturb or resample one hyperparameter, staying inside ``distribution``.

    With probability ``resample_probability`` draw a fresh value from the distribution
    (log-uniform for log distributions); else multiply by one of ``factors`` and clip
    to the distribution's range (rounded to its step, if it has one).
    """
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[int(rng.integers(len(distribution.choices)))]
    if not isinstance(distribution, (FloatDistribution, IntDistribution)):
        raise ValueError(f"Cannot explore a {type(distribution).__name__}.")
    low, high = distribution.low, distribution.high
    if rng.random() < resample_probability:
        if distribution.log:
            new = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            new = rng.uniform(low, high)
    else:
        new = value * float(factors[int(rng.integers(len(factors)))])
    new = min(max(new, low), high)
    step = getattr(distribution, "step", None)
    if step is not None:
        new = low + round((new - low) / step) * step
        new = min(max(new, low), high)
    return int(round(new)) if isinstance(distribution, IntDistribution) else float(new)


class PBTTransfer(GreedyTransfer):
    """Exploit-and-explore in the style of population-based training.

    Exploit: like :class:`GreedyTransfer`, pull a better split's weights and optimizer
    state, kept only if they beat the receiver on its own validation set; the receiver
    then runs with the donor's hyperparameters. Explore: on every accepted transfer,
    perturb (x0.8 / x1.2 by default) or resample each hyperparameter named in
    ``hyperparams``. A name the objective suggested (``trial.suggest_float("lr", ...)``)
    is explored in the split's current values, whatever it configures (the optimizer's
    param groups are kept in step; register :meth:`SplitTrial.on_hparams_change` to
    apply the others, e.g. a dropout rate); any other name must be a key of the
    optimizer's param groups. Every change is recorded with the transfer event and as
    the trial's ``hparams:<step>`` attribute, so the schedule can be replayed.

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> from optuna_mto.transfer import PBTTransfer
        >>> lr = FloatDistribution(1e-4, 1e-1, log=True)
        >>> manager = PBTTransfer(hyperparams={"lr": lr}, interval=2, truncation=0.25)
        >>> sorted(manager.hyperparams), manager.factors
        (['lr'], (0.8, 1.2))

    Args:
        hyperparams: Hyperparameter name -> Optuna distribution giving its allowed
            range, e.g. ``{"lr": FloatDistribution(1e-4, 1e-1, log=True)}``. None (or
            empty) explores every hyperparameter the objective suggested, within the
            distribution it was suggested from.
        factors: Multiplicative perturbations to choose from.
        resample_probability: Chance of drawing a fresh value instead.
        **kwargs: As for :class:`GreedyTransfer`.
    """

    def __init__(
        self,
        *,
        hyperparams: Mapping[str, BaseDistribution] | None = None,
        factors: Sequence[float] = (0.8, 1.2),
        resample_probability: float = 0.25,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        parsed = {}
        for name, dist in (hyperparams or {}).items():
            if isinstance(dist, str):
                dist = json_to_distribution(dist)
            if not isinstance(dist, BaseDistribution):
                raise ValueError(
                    f"hyperparams[{name!r}] must be an optuna distribution, but got {dist!r}."
                )
            parsed[name] = dist
        if not 0.0 <= resample_probability <= 1.0:
            raise ValueError(
                f"resample_probability must be in [0, 1], but got {resample_probability=}."
            )
        if not factors or any(f <= 0 for f in factors):
            raise ValueError(f"factors must be positive numbers, but got factors={factors!r}.")
        self.hyperparams = parsed
        self.factors = tuple(float(f) for f in factors)
        self.resample_probability = float(resample_probability)

    def explore(
        self, optimizer_state: dict[str, Any], context: TransferContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Perturb the named hyperparameters of every param group; return the changes.

        Names the objective suggested are left to :meth:`explore_hparams`.
        """
        state = copy.copy(optimizer_state)
        groups = [dict(g) for g in optimizer_state["param_groups"]]
        changes: dict[str, Any] = {}
        for name, dist in self.hyperparams.items():
            if name in context.hparams:
                continue
            for index, group in enumerate(groups):
                if name not in group:
                    raise ValueError(
                        f"The optimizer has no hyperparameter {name!r} to explore; "
                        f"its param group holds {sorted(k for k in group if k != 'params')}."
                    )
                old = group[name]
                new = explore_value(
                    float(old), dist, context.rng, self.factors, self.resample_probability
                )
                group[name] = new
                changes[f"{name}[{index}]" if len(groups) > 1 else name] = [old, new]
        state["param_groups"] = groups
        return state, changes

    def explore_hparams(
        self,
        values: Mapping[str, Any],
        distributions: Mapping[str, BaseDistribution],
        context: TransferContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Perturb the suggested hyperparameters named in ``hyperparams`` (all if none).

        Args:
            values: The split's current values (after adopting the donor's).
            distributions: The distributions they were suggested from.
            context: The transfer context (its ``rng`` makes the change replayable).

        Returns:
            The new values and the changes, ``name: [old, new]``.
        """
        new, changes = dict(values), {}
        names = list(self.hyperparams) if self.hyperparams else list(values)
        for name in names:
            dist = self.hyperparams.get(name) or distributions.get(name)
            if name not in values or dist is None or dist.single():
                continue
            old = values[name]
            value = old if isinstance(dist, CategoricalDistribution) else float(old)
            new[name] = explore_value(
                value, dist, context.rng, self.factors, self.resample_probability
            )
            changes[name] = [old, new[name]]
        return new, changes

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments (distributions as Optuna JSON)."""
        return {
            **super().get_params(),
            "hyperparams": {k: distribution_to_json(v) for k, v in self.hyperparams.items()},
            "factors": list(self.factors),
            "resample_probability": self.resample_probability,
        }
