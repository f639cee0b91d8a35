"""Pure, seeded donor-selection rules (no torch, no storage)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["is_better", "select_best", "select_tournament", "select_uniform"]


def is_better(a: float, b: float, direction: str) -> bool:
    """Return True if score ``a`` is strictly better than ``b`` in ``direction``.

    NaN is never better than anything, and anything finite is better than NaN.
    """
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if direction == "maximize" else a < b


def _ranked(fitness: Mapping[int, float], direction: str) -> list[int]:
    finite = [k for k, v in fitness.items() if not math.isnan(v)]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(finite, key=lambda k: (sign * fitness[k], k))


def select_best(fitness: Mapping[int, float], direction: str) -> int | None:
    """Return the split with the best fitness (lowest index on ties), or None if empty."""
    ranked = _ranked(fitness, direction)
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
