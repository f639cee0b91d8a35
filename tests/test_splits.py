from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from _util import run_in_subprocess

from optuna_mto._data.splits import (
    SPLITTER_KINDS,
    SPLITTERS,
    BaseSplitter,
    KFoldSplitter,
    RandomSplitter,
    StratifiedSplitter,
    check_splitter,
    make_splitter,
)

KINDS = ["random", "kfold", "stratified"]
SIZES = [2, 3, 5, 10, 37, 100, 1001]


def _targets(n: int, n_classes: int = 3) -> np.ndarray:
    # Imbalanced but every class has >= 1 sample when n >= n_classes.
    return np.random.default_rng(1234).integers(0, n_classes, size=n)


def _check_invariants(train: np.ndarray, valid: np.ndarray, n: int) -> None:
    assert isinstance(train, np.ndarray) and isinstance(valid, np.ndarray)
    assert train.dtype == np.int64 and valid.dtype == np.int64
    assert train.ndim == 1 and valid.ndim == 1
    assert train.size > 0 and valid.size > 0
    assert np.all(np.diff(train) > 0), "train not strictly sorted"
    assert np.all(np.diff(valid) > 0), "valid not strictly sorted"
    assert np.intersect1d(train, valid).size == 0, "train and valid overlap"
    np.testing.assert_array_equal(np.union1d(train, valid), np.arange(n))
    assert train.size + valid.size == n


def _digest(train: np.ndarray, valid: np.ndarray) -> str:
    return hashlib.sha256(train.tobytes() + b"|" + valid.tobytes()).hexdigest()


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", SIZES)
def test_invariants_every_kind_and_size(kind: str, n: int) -> None:
    n_splits = 2 if kind == "kfold" else 3
    splitter = make_splitter(kind, n_splits, validation_fraction=0.3, seed=7)
    targets = _targets(n, n_classes=2) if kind == "stratified" else None
    if kind == "stratified" and np.bincount(targets).max() < 2:
        targets = np.array([0] * n)
    for k in range(n_splits):
        train, valid = splitter.split(n, k, targets)
        _check_invariants(train, valid, n)


def test_numpy_integer_arguments_are_accepted() -> None:
    splitter = RandomSplitter(np.int64(2), validation_fraction=np.float32(0.25), seed=np.int32(3))
    train, valid = splitter.split(np.int64(20), np.int64(1))
    _check_invariants(train, valid, 20)
    assert json.loads(json.dumps(splitter.get_params())) == splitter.get_params()


# ----------------------------------------------------------------------------- random


def test_random_validation_size_and_determinism() -> None:
    splitter = RandomSplitter(4, validation_fraction=0.2, seed=0)
    train, valid = splitter.split(101, 2)
    assert valid.size == max(1, round(101 * 0.2))
    again = RandomSplitter(4, validation_fraction=0.2, seed=0).split(101, 2)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(valid, again[1])


def test_random_minimum_one_validation_sample() -> None:
    _, valid = RandomSplitter(1, validation_fraction=0.01, seed=0).split(10, 0)
    assert valid.size == 1


def test_random_split_indices_differ() -> None:
    splitter = RandomSplitter(5, validation_fraction=0.2, seed=0)
    valids = [tuple(splitter.split(200, k)[1]) for k in range(5)]
    assert len(set(valids)) == 5


def test_random_seed_changes_split() -> None:
    a = RandomSplitter(2, seed=0).split(200, 0)[1]
    b = RandomSplitter(2, seed=1).split(200, 0)[1]
    assert not np.array_equal(a, b)


def test_random_targets_length_is_checked_but_optional() -> None:
    splitter = RandomSplitter(2)
    _check_invariants(*splitter.split(10, 0, list(range(10))), 10)
    with pytest.raises(ValueError, match=r"targets must be a 1-D .*n_samples=10"):
        splitter.split(10, 0, [0, 1, 2])


def test_random_does_not_touch_global_random_state() -> None:
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    RandomSplitter(3).split(50, 1)
    StratifiedSplitter(3).split(50, 1, _targets(50))
    KFoldSplitter(3).split(50, 1)
    assert np.random.random() == expected


# ----------------------------------------------------------------------------- k-fold


@pytest.mark.parametrize("n, k", [(2, 2), (10, 3), (11, 5), (100, 10), (7, 7)])
def test_kfold_folds_partition_the_data(n: int, k: int) -> None:
    splitter = KFoldSplitter(k, seed=3)
    valids = [splitter.split(n, i)[1] for i in range(k)]
    all_valid = np.concatenate(valids)
    assert all_valid.size == n, "folds overlap"
    np.testing.assert_array_equal(np.sort(all_valid), np.arange(n))
    sizes = [v.size for v in valids]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_ignores_validation_fraction() -> None:
    a = KFoldSplitter(4, validation_fraction=0.1, seed=5)
    b = KFoldSplitter(4, validation_fraction=0.9, seed=5)
    for i in range(4):
        np.testing.assert_array_equal(a.split(40, i)[1], b.split(40, i)[1])
    assert a.split(40, 0)[1].size == 10


def test_kfold_seed_changes_folds() -> None:
    a = KFoldSplitter(2, seed=0).split(100, 0)[1]
    b = KFoldSplitter(2, seed=1).split(100, 0)[1]
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------- stratified


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.75, 0.9])
def test_stratified_keeps_class_proportions(fraction: float) -> None:
    targets = np.array([0] * 50 + [1] * 30 + [2] * 7 + [3] * 2 + [4] * 1 + [5] * 13)
    perm = np.random.default_rng(0).permutation(targets.size)
    targets = targets[perm]
    splitter = StratifiedSplitter(3, validation_fraction=fraction, seed=11)
    for k in range(3):
        train, valid = splitter.split(targets.size, k, targets)
        _check_invariants(train, valid, targets.size)
        for c in np.unique(targets):
            count = int(np.sum(targets == c))
            n_valid_c = int(np.sum(targets[valid] == c))
            assert abs(n_valid_c - count * fraction) <= 1.0
            if count >= 2:
                assert 1 <= n_valid_c <= count - 1
            else:
                assert n_valid_c == 0


def test_stratified_split_indices_differ() -> None:
    targets = _targets(300)
    splitter = StratifiedSplitter(5, validation_fraction=0.2, seed=0)
    valids = [tuple(splitter.split(300, k, targets)[1]) for k in range(5)]
    assert len(set(valids)) == 5


def test_stratified_accepts_lists_strings_and_tensors() -> None:
    labels = ["cat", "dog"] * 10
    train, valid = StratifiedSplitter(2).split(20, 0, labels)
    _check_invariants(train, valid, 20)
    as_ints = StratifiedSplitter(2).split(20, 0, [0, 1] * 10)
    np.testing.assert_array_equal(valid, as_ints[1])
    torch = pytest.importorskip("torch")
    from_tensor = StratifiedSplitter(2).split(20, 0, torch.tensor([0, 1] * 10))
    np.testing.assert_array_equal(valid, from_tensor[1])


def test_stratified_requires_targets() -> None:
    with pytest.raises(ValueError, match=r"requires targets .*targets=None"):
        StratifiedSplitter(2).split(10, 0)


def test_stratified_targets_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"length n_samples=10.*\(9,\)"):
        StratifiedSplitter(2).split(10, 0, [0, 1] * 4 + [0])


def test_stratified_all_singleton_classes() -> None:
    with pytest.raises(ValueError, match=r"every class has a single sample"):
        StratifiedSplitter(2).split(5, 0, [0, 1, 2, 3, 4])


# ----------------------------------------------------------------------------- determinism


def test_splits_identical_in_subprocess() -> None:
    cases = [
        (kind, seed, k, n) for kind in KINDS for seed in (0, 42) for k in (0, 2) for n in (10, 257)
    ]
    code = (
        "import hashlib, json, numpy as np\n"
        "from optuna_mto._data.splits import make_splitter\n"
        f"cases = {cases!r}\n"
        "out = []\n"
        "for kind, seed, k, n in cases:\n"
        "    t = np.random.default_rng(1234).integers(0, 3, size=n) "
        "if kind == 'stratified' else None\n"
        "    tr, va = make_splitter(kind, 3, 0.25, seed).split(n, k, t)\n"
        "    out.append(hashlib.sha256(tr.tobytes() + b'|' + va.tobytes()).hexdigest())\n"
        "print(json.dumps(out))\n"
    )
    remote = json.loads(run_in_subprocess(code))
    local = []
    for kind, seed, k, n in cases:
        targets = _targets(n) if kind == "stratified" else None
        local.append(_digest(*make_splitter(kind, 3, 0.25, seed).split(n, k, targets)))
    assert remote == local


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", [RandomSplitter, KFoldSplitter, StratifiedSplitter])
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"n_splits": 0}, r"n_splits must be an integer >= 1, but got n_splits=0"),
        ({"n_splits": -3}, r"n_splits must be an integer >= 1, but got n_splits=-3"),
        ({"n_splits": 2.0}, r"n_splits must be an integer >= 1, but got n_splits=2\.0"),
        ({"n_splits": True}, r"n_splits must be an integer >= 1, but got n_splits=True"),
        ({"validation_fraction": 0.0}, r"\(0, 1\), but got validation_fraction=0\.0"),
        ({"validation_fraction": 1.0}, r"\(0, 1\), but got validation_fraction=1\.0"),
        ({"validation_fraction": -0.1}, r"\(0, 1\), but got validation_fraction=-0\.1"),
        ({"validation_fraction": float("nan")}, r"\(0, 1\), but got validation_fraction=nan"),
        ({"validation_fraction": "0.2"}, r"\(0, 1\), but got validation_fraction='0\.2'"),
        ({"validation_fraction": True}, r"\(0, 1\), but got validation_fraction=True"),
        ({"seed": -1}, r"seed must be an integer >= 0, but got seed=-1"),
        ({"seed": 1.5}, r"seed must be an integer >= 0, but got seed=1\.5"),
        ({"seed": None}, r"seed must be an integer >= 0, but got seed=None"),
    ],
)
def test_init_validation(cls: type[BaseSplitter], kwargs: dict, pattern: str) -> None:
    params = {"n_splits": 3, "validation_fraction": 0.2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        cls(**params)


def test_kfold_needs_two_splits() -> None:
    with pytest.raises(
        ValueError, match=r"\(KFoldSplitter\) needs n_splits >= 2, but got n_splits=1"
    ):
        KFoldSplitter(1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split_index", [-1, 3, 10, 1.0, True, None])
def test_split_index_out_of_range(kind: str, split_index: object) -> None:
    splitter = make_splitter(kind, 3)
    with pytest.raises(ValueError, match=r"split_index must be an integer in \[0, n_splits\) = "):
        splitter.split(20, split_index, _targets(20))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"split_index={split_index!r}"):
        splitter.split(20, split_index, _targets(20))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_samples", [1, 0, -5, 10.0, True, None])
def test_n_samples_invalid(kind: str, n_samples: object) -> None:
    splitter = make_splitter(kind, 2)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 2, but got n_samples="):
        splitter.split(n_samples, 0)  # type: ignore[arg-type]


def test_random_too_small_dataset() -> None:
    with pytest.raises(ValueError, match=r"Reduce validation_fraction or use a larger dataset"):
        RandomSplitter(1, validation_fraction=0.9).split(3, 0)
    with pytest.raises(ValueError, match=r"leaves no training samples out of n_samples=2"):
        RandomSplitter(1, validation_fraction=0.8).split(2, 0)


def test_kfold_too_small_dataset() -> None:
    with pytest.raises(ValueError, match=r"n_samples=4 and n_splits=5\. Reduce n_splits"):
        KFoldSplitter(5).split(4, 0)


# ----------------------------------------------------------------------------- make_splitter


@pytest.mark.parametrize(
    "kind, cls",
    [("random", RandomSplitter), ("kfold", KFoldSplitter), ("stratified", StratifiedSplitter)],
)
def test_make_splitter_and_get_params_round_trip(kind: str, cls: type[BaseSplitter]) -> None:
    splitter = make_splitter(kind, 4, validation_fraction=0.3, seed=9)
    assert type(splitter) is cls
    assert splitter.kind == kind
    params = splitter.get_params()
    assert params == {"kind": kind, "n_splits": 4, "validation_fraction": 0.3, "seed": 9}
    assert json.loads(json.dumps(params)) == params
    rebuilt = make_splitter(**params)
    assert rebuilt.get_params() == params
    targets = _targets(50)
    np.testing.assert_array_equal(
        splitter.split(50, 1, targets)[1], rebuilt.split(50, 1, targets)[1]
    )
    assert repr(splitter) == f"{cls.__name__}(n_splits=4, validation_fraction=0.3, seed=9)"


@pytest.mark.parametrize("kind", ["Random", "k-fold", "", None, 3])
def test_make_splitter_unknown_kind(kind: object) -> None:
    with pytest.raises(
        ValueError,
        match=rf"kind must be one of \('random', 'kfold', 'stratified'\), but got kind={kind!r}",
    ):
        make_splitter(kind, 3)  # type: ignore[arg-type]


def test_base_splitter_is_abstract() -> None:
    with pytest.raises(TypeError):
        BaseSplitter(2)  # type: ignore[abstract]


def test_the_names_are_the_classes_kinds() -> None:
    assert SPLITTER_KINDS == ("random", "kfold", "stratified")
    for kind, cls in SPLITTERS.items():
        assert cls(2).kind == kind


@pytest.mark.parametrize("kind", KINDS)
def test_check_splitter_applies_the_classes_rules(kind: str) -> None:
    assert check_splitter(kind, 2, 0.2, 0) is SPLITTERS[kind]
    for args in [(0, 0.2, 0), (3, 1.0, 0), (3, 0.2, -1), (1, 0.2, 0)]:
        try:
            SPLITTERS[kind](*args)
        except ValueError as err:
            with pytest.raises(ValueError, match=re.escape(str(err))):
                check_splitter(kind, *args)
        else:
            assert check_splitter(kind, *args) is SPLITTERS[kind]


def test_check_splitter_names_the_config_field() -> None:
    with pytest.raises(ValueError, match=r"splitter must be one of .*but got splitter='x'"):
        check_splitter("x", 2, name="splitter")
    # A stored config holds plain values only: NumPy scalars are the splitters' leniency.
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 1"):
        check_splitter("random", np.int64(2))
