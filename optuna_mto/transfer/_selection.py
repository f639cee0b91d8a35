"""Pure, seeded donor-selection rules (no torch, no storage)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "rank",
    "is_better",
    "is_better_by",
    "select_best",
    "select_tournament",
    "select_uniform",
    "truncation_donors",
]


def is_better(a: float, b: float, direction: str) -> bool:
    """Return True if score ``a`` is strictly better than ``b`` in ``direction``.

    NaN is never better than anything, and anything finite is better than NaN.
    """
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if direction == "maximize" else a < b


def is_better_by(a: float, b: float, margin: float, direction: str) -> bool:
    """Return True if ``a`` beats ``b`` by more than ``margin`` in ``direction``.

    A finite ``a`` always beats a NaN ``b`` (a diverged model is replaced by any other).
    """
    if math.isnan(b):
        return not math.isnan(a)
    return is_better(a, b + margin if direction == "maximize" else b - margin, direction)


def truncation_donors(
    fitness: Mapping[int, float], receiver: int, own: float, quantile: float, direction: str
) -> list[int]:
    """PBT truncation: the top-quantile donors if the receiver is in the bottom quantile.

    The population is the other splits' ``fitness`` plus the receiver's ``own`` score;
    NaN (a diverged split) ranks last. With ``n = ceil(quantile * population)`` (at most
    half of it), the receiver may copy only if it is among the ``n`` worst, and only
    from the ``n`` best. Everyone else keeps training on its own weights, which keeps
    the population diverse.

    Returns:
        The allowed donors (best first), or an empty list when the receiver may not copy.
    """
    population = {**fitness, receiver: own}
    ranked = rank(population, direction)
    ranked += sorted(k for k, v in population.items() if math.isnan(v))
    n = min(math.ceil(quantile * len(ranked)), len(ranked) // 2)
    if n < 1 or receiver not in ranked[-n:]:
        return []
    return [k for k in ranked[:n] if k != receiver]


def rank(scores: Mapping[int, float], direction: str) -> list[int]:
    """Return the keys of ``scores``, best first in ``direction`` (lowest key on ties).

    The one ranking rule of the package (donors, the cross-split table, soups); NaN
    scores are left out.
    """
    finite = [k for k, v in scores.items() if not math.isnan(v)]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(finite, key=lambda k: (sign * scores[k], k))


def select_best(fitness: Mapping[int, float], direction: str) -> int | None:
    """Return the split with the best fitness (lowest index on ties), or None if empty."""
    ranked = rank(fitness, direction)
    return ranked[0] if ranked else None


def select_uniform(fitness: Mapping[int, float], rng: np.random.Generator) -> int | None:
    """Return a split drawn uniformly at random, or None if empty."""
    keys = sorted(fitness)
    return int(keys[rng.integers(len(keys))]) if keys else None


def select_tournament(
    fitness: Mapping[int, float], direction: str, rng: np.random.Generator, size: int = 2
) -> int | None:
    """Draw ``size`` splits without replacement and return the best of them."""
    keys = sorted(fitness)
    if not keys:
        return None
    drawn = rng.choice(len(keys), size=min(size, len(keys)), replace=False)
    return select_best({keys[i]: fitness[keys[i]] for i in drawn}, direction)
