from __future__ import annotations

import math

import numpy as np
import pytest

from optuna_mto.transfer import is_better, select_best, select_tournament, select_uniform

NAN = math.nan
FITNESS = {0: 0.1, 1: 0.5, 2: 0.3, 3: 0.9, 4: 0.7}


@pytest.mark.parametrize(
    ("a", "b", "direction", "expected"),
    [
        (2.0, 1.0, "maximize", True),
        (1.0, 2.0, "maximize", False),
        (2.0, 1.0, "minimize", False),
        (1.0, 2.0, "minimize", True),
        (1.0, 1.0, "maximize", False),
        (1.0, 1.0, "minimize", False),
        (NAN, 1.0, "maximize", False),
        (NAN, 1.0, "minimize", False),
        (1.0, NAN, "maximize", True),
        (1.0, NAN, "minimize", True),
        (NAN, NAN, "maximize", False),
        (NAN, NAN, "minimize", False),
        (-math.inf, NAN, "maximize", True),
        (math.inf, NAN, "minimize", True),
        (math.inf, 1e308, "maximize", True),
        (-math.inf, -1e308, "minimize", True),
    ],
)
def test_is_better(a: float, b: float, direction: str, expected: bool) -> None:
    assert is_better(a, b, direction) is expected


def test_select_best_maximize_and_minimize() -> None:
    assert select_best(FITNESS, "maximize") == 3
    assert select_best(FITNESS, "minimize") == 0


def test_select_best_ties_go_to_lowest_index() -> None:
    fitness = {5: 0.9, 2: 0.9, 7: 0.1, 3: 0.9}
    assert select_best(fitness, "maximize") == 2
    fitness = {6: 0.1, 4: 0.1, 1: 0.5}
    assert select_best(fitness, "minimize") == 4


def test_select_best_ignores_nan() -> None:
    fitness = {0: NAN, 1: 0.2, 2: NAN, 3: 0.4}
    assert select_best(fitness, "maximize") == 3
    assert select_best(fitness, "minimize") == 1


def test_select_best_empty_or_all_nan_is_none() -> None:
    assert select_best({}, "maximize") is None
    assert select_best({}, "minimize") is None
    assert select_best({0: NAN, 1: NAN}, "maximize") is None


def test_select_uniform_known_draws() -> None:
    rng = np.random.default_rng(42)
    assert [select_uniform(FITNESS, rng) for _ in range(8)] == [0, 3, 3, 2, 2, 4, 0, 3]
    rng = np.random.default_rng(0)
    sparse = {9: 0.3, 2: 0.1, 5: 0.5}
    assert [select_uniform(sparse, rng) for _ in range(8)] == [9, 5, 5, 2, 2, 2, 2, 2]


def test_select_uniform_returns_python_int_from_keys() -> None:
    drawn = select_uniform({9: 0.3, 2: 0.1}, np.random.default_rng(1))
    assert type(drawn) is int and drawn in (2, 9)


def test_select_uniform_is_replayable() -> None:
    a = [select_uniform(FITNESS, np.random.default_rng(s)) for s in range(50)]
    b = [select_uniform(FITNESS, np.random.default_rng(s)) for s in range(50)]
    assert a == b


def test_select_uniform_hits_every_key_including_nan() -> None:
    fitness = {0: 0.1, 3: NAN, 8: 0.2, 11: 0.4}
    rng = np.random.default_rng(123)
    counts = dict.fromkeys(fitness, 0)
    for _ in range(4000):
        counts[select_uniform(fitness, rng)] += 1
    assert set(counts) == set(fitness)
    # Each of the 4 keys is expected 1000 times; 800 is > 6 standard deviations away.
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_select_uniform_empty_is_none() -> None:
    assert select_uniform({}, np.random.default_rng(0)) is None


def test_select_tournament_known_draws() -> None:
    rng = np.random.default_rng(42)
    drawn = [select_tournament(FITNESS, "maximize", rng, 2) for _ in range(8)]
    assert drawn == [3, 1, 3, 2, 3, 3, 3, 1]
    rng = np.random.default_rng(42)
    drawn = [select_tournament(FITNESS, "minimize", rng, 2) for _ in range(8)]
    assert drawn == [0, 2, 0, 0, 2, 2, 2, 0]
    rng = np.random.default_rng(7)
    drawn = [select_tournament(FITNESS, "maximize", rng, 3) for _ in range(8)]
    assert drawn == [3, 3, 3, 3, 4, 3, 4, 3]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("size", [5, 6, 100])
def test_select_tournament_of_everyone_returns_the_best(direction: str, size: int) -> None:
    best = select_best(FITNESS, direction)
    rng = np.random.default_rng(2024)
    assert {select_tournament(FITNESS, direction, rng, size) for _ in range(50)} == {best}


def test_select_tournament_size_one_is_uniform_over_all() -> None:
    rng = np.random.default_rng(5)
    drawn = {select_tournament(FITNESS, "maximize", rng, 1) for _ in range(500)}
    assert drawn == set(FITNESS)


def test_select_tournament_size_two_never_returns_the_worst() -> None:
    rng = np.random.default_rng(9)
    drawn = [select_tournament(FITNESS, "maximize", rng, 2) for _ in range(500)]
    assert 0 not in drawn  # 0.1 loses every pair
    assert set(drawn) == {1, 2, 3, 4}


def test_select_tournament_empty_is_none() -> None:
    assert select_tournament({}, "maximize", np.random.default_rng(0), 2) is None


def test_select_tournament_all_nan_is_none() -> None:
    assert select_tournament({0: NAN, 1: NAN}, "maximize", np.random.default_rng(0), 2) is None
