"""The splitters: deterministic (train, validation) splits of a gross training set.

The multi-task training framework of "A Novel DNN Training Framework via Data Sampling and
Multi-Task Optimization" draws ``K`` (train, validation) pairs from one gross training set and
trains one model per pair (a "split"). Every worker process must compute exactly the same indices
for a given split, so all randomness here comes from a :class:`numpy.random.Generator` seeded
only from ``(seed, split_index)`` (or ``seed`` alone for k-fold); the global :mod:`random` and
:mod:`numpy.random` states are never used.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from optuna_mto._data.arrays import to_numpy
from optuna_mto._validation import check_int, check_number, is_int

__all__ = [
    "BaseSplitter",
    "KFoldSplitter",
    "RandomSplitter",
    "StratifiedSplitter",
    "check_min_splits",
    "check_splitter_args",
]


def check_splitter_args(
    n_splits: Any, validation_fraction: Any, seed: Any, *, numpy: bool = False
) -> None:
    """Raise ValueError for a splitter argument of the wrong type or out of range.

    Args:
        n_splits: Must be an integer ``>= 1``.
        validation_fraction: Must be a float in ``(0, 1)``.
        seed: Must be an integer ``>= 0``.
        numpy: Also accept NumPy scalars (the splitters do; a stored config does not).
    """
    check_int("n_splits", n_splits, 1, numpy=numpy)
    check_number(
        "validation_fraction", validation_fraction, 0, 1,
        low_open=True, high_open=True, kind="float", numpy=numpy,
    )  # fmt: skip
    check_int("seed", seed, 0, numpy=numpy)


def check_min_splits(cls: type[BaseSplitter], kind: str, n_splits: int) -> None:
    """Raise ValueError if splitter ``cls`` (named ``kind``) cannot make ``n_splits`` splits."""
    if n_splits < cls.min_splits:
        raise ValueError(
            f"The {kind!r} splitter ({cls.__name__}) needs n_splits >= {cls.min_splits}, "
            f"but got n_splits={n_splits}. Use splitter='random' (RandomSplitter) for fewer "
            "splits."
        )


class BaseSplitter(abc.ABC):
    """Base class of the splitters that turn a gross training set into (train, validation) pairs.

    Like scikit-learn estimators, cheap argument checks happen in ``__init__`` and checks that
    depend on the data happen in :meth:`split`.

    Args:
        n_splits: Number of (train, validation) pairs ``K``; an integer ``>= 1``.
        validation_fraction: Fraction of the samples that go to validation, in ``(0, 1)``.
        seed: Non-negative integer seed. Together with the split index it fully determines the
            indices, in every process.

    Raises:
        ValueError: If an argument is out of range or of the wrong type.
    """

    #: The fewest splits the strategy can make.
    min_splits: ClassVar[int] = 1

    def __init__(self, n_splits: int, validation_fraction: float = 0.2, seed: int = 0) -> None:
        check_splitter_args(n_splits, validation_fraction, seed, numpy=True)
        check_min_splits(type(self), self.kind, n_splits)
        self._n_splits = int(n_splits)
        self._validation_fraction = float(validation_fraction)
        self._seed = int(seed)

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """Name of the splitting strategy: ``"random"``, ``"kfold"`` or ``"stratified"``."""

    @property
    def n_splits(self) -> int:
        """Number of (train, validation) pairs."""
        return self._n_splits

    @property
    def validation_fraction(self) -> float:
        """Fraction of the samples that go to validation, as given to ``__init__``."""
        return self._validation_fraction

    @property
    def seed(self) -> int:
        """Seed that, with the split index, determines the indices."""
        return self._seed

    def split(
        self,
        n_samples: int,
        split_index: int,
        targets: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the (train, validation) indices of one split.

        Args:
            n_samples: Number of samples in the gross training set; an integer ``>= 2``.
            split_index: Which split, in ``[0, n_splits)``.
            targets: Class labels of the samples (length ``n_samples``). Required by
                :class:`StratifiedSplitter`; checked for length and otherwise ignored by the
                other splitters.

        Returns:
            ``(train_idx, valid_idx)``: sorted, disjoint ``int64`` arrays whose union is
            ``range(n_samples)``. Both are non-empty.

        Raises:
            ValueError: If an argument is invalid or the dataset is too small for this splitter.
        """
        check_int("n_samples", n_samples, 2, numpy=True)
        if not is_int(split_index, numpy=True) or not 0 <= split_index < self._n_splits:
            raise ValueError(
                f"split_index must be an integer in [0, n_splits) = [0, {self._n_splits}), "
                f"but got {split_index=}."
            )
        target_array: np.ndarray | None = None
        if targets is not None:
            target_array = to_numpy(targets)
            if target_array.ndim != 1 or target_array.shape[0] != n_samples:
                raise ValueError(
                    "targets must be a 1-D sequence with one label per sample "
                    f"(length n_samples={n_samples}), but got shape {target_array.shape}."
                )
        valid = self._valid_indices(int(n_samples), int(split_index), target_array)
        valid = np.sort(np.asarray(valid, dtype=np.int64))
        mask = np.ones(n_samples, dtype=bool)
        mask[valid] = False
        train = np.flatnonzero(mask).astype(np.int64, copy=False)
        return train, valid

    @abc.abstractmethod
    def _valid_indices(
        self, n_samples: int, split_index: int, targets: np.ndarray | None
    ) -> np.ndarray:
        """Return the validation indices (any order) for already validated arguments."""

    def _rng(self, split_index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self._seed, split_index]))

    def get_params(self) -> dict[str, Any]:
        """Return the JSON-serialisable parameters that reconstruct this splitter.

        Returns:
            ``{"kind": ..., "n_splits": ..., "validation_fraction": ..., "seed": ...}``;
            ``make_splitter(**get_params())`` builds an equivalent splitter.
        """
        return {
            "kind": self.kind,
            "n_splits": self._n_splits,
            "validation_fraction": self._validation_fraction,
            "seed": self._seed,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_splits={self._n_splits}, "
            f"validation_fraction={self._validation_fraction}, seed={self._seed})"
        )


class RandomSplitter(BaseSplitter):
    """Independent random (train, validation) pair per split, as in the paper.

    Split ``k`` shuffles ``range(n_samples)`` with a generator seeded from ``(seed, k)`` and
    validates on the first ``n_valid = max(1, round(n_samples * validation_fraction))`` samples
    of the permutation (Python's ``round``). Validation sets of different splits may overlap.

    Example:
        >>> [len(rows) for rows in RandomSplitter(n_splits=4, seed=0).split(100, 0)]
        [80, 20]

    Args:
        n_splits: Number of (train, validation) pairs; an integer ``>= 1``.
        validation_fraction: Fraction of the samples that go to validation, in ``(0, 1)``.
        seed: Non-negative integer seed.
    """

    @property
    def kind(self) -> str:
        """Always ``"random"``."""
        return "random"

    def _valid_indices(
        self, n_samples: int, split_index: int, targets: np.ndarray | None
    ) -> np.ndarray:
        n_valid = max(1, round(n_samples * self._validation_fraction))
        if n_valid >= n_samples:
            raise ValueError(
                f"validation_fraction={self._validation_fraction} leaves no training samples "
                f"out of n_samples={n_samples}. Reduce validation_fraction or use a larger "
                "dataset."
            )
        return self._rng(split_index).permutation(n_samples)[:n_valid]


class KFoldSplitter(BaseSplitter):
    """K-fold cross-validation: split ``k`` validates on fold ``k``.

    One permutation of ``range(n_samples)``, seeded from ``seed`` only (it does not depend on the
    split index), is cut into ``n_splits`` folds whose sizes differ by at most one. The
    validation sets of all splits are therefore disjoint and together cover the data.

    ``validation_fraction`` is validated and reported by :meth:`get_params` but otherwise
    ignored: the effective validation fraction is ``1 / n_splits``.

    Example:
        >>> splitter = KFoldSplitter(n_splits=4)
        >>> [len(splitter.split(100, k)[1]) for k in range(4)]  # disjoint validation folds
        [25, 25, 25, 25]

    Args:
        n_splits: Number of folds; an integer ``>= 2``.
        validation_fraction: Ignored (see above), but must still lie in ``(0, 1)``.
        seed: Non-negative integer seed.

    Raises:
        ValueError: If ``n_splits < 2`` or another argument is invalid.
    """

    min_splits: ClassVar[int] = 2

    @property
    def kind(self) -> str:
        """Always ``"kfold"``."""
        return "kfold"

    def _valid_indices(
        self, n_samples: int, split_index: int, targets: np.ndarray | None
    ) -> np.ndarray:
        if n_samples < self._n_splits:
            raise ValueError(
                f"k-fold needs n_samples >= n_splits, but got n_samples={n_samples} and "
                f"n_splits={self._n_splits}. Reduce n_splits or use a larger dataset."
            )
        permutation = np.random.default_rng(np.random.SeedSequence(self._seed)).permutation(
            n_samples
        )
        return np.array_split(permutation, self._n_splits)[split_index]


class StratifiedSplitter(BaseSplitter):
    """Independent random pair per split that keeps the class proportions.

    Like :class:`RandomSplitter`, split ``k`` is drawn with a generator seeded from
    ``(seed, k)``. Each class ``c`` with ``count_c`` samples contributes
    ``round(count_c * validation_fraction)`` of them to validation, clipped to
    ``[1, count_c - 1]`` so that a class with at least two samples appears in both the training
    and the validation set. A class with a single sample always stays in training. Hence every
    class's validation count is within one sample of ``count_c * validation_fraction``.

    :meth:`split` requires ``targets``.

    Example:
        >>> labels = np.array([0] * 80 + [1] * 20)
        >>> train, valid = StratifiedSplitter(n_splits=4, seed=0).split(100, 0, labels)
        >>> len(valid), int(labels[valid].sum())  # the classes' shares kept: 4 of 20 are 1
        (20, 4)

    Args:
        n_splits: Number of (train, validation) pairs; an integer ``>= 1``.
        validation_fraction: Fraction of each class that goes to validation, in ``(0, 1)``.
        seed: Non-negative integer seed.
    """

    @property
    def kind(self) -> str:
        """Always ``"stratified"``."""
        return "stratified"

    def _valid_indices(
        self, n_samples: int, split_index: int, targets: np.ndarray | None
    ) -> np.ndarray:
        if targets is None:
            raise ValueError(
                "StratifiedSplitter.split requires targets (one class label per sample), "
                "but got targets=None. Pass the labels, or use kind='random'."
            )
        _, labels, counts = np.unique(targets, return_inverse=True, return_counts=True)
        labels = labels.reshape(-1)
        n_valid_per_class = np.array(
            [
                0 if count < 2 else min(max(1, round(count * self._validation_fraction)), count - 1)
                for count in counts.tolist()
            ],
            dtype=np.int64,
        )
        if n_valid_per_class.sum() == 0:
            raise ValueError(
                "Cannot stratify: every class has a single sample, so none can be put in "
                "validation. Use kind='random' or a larger dataset."
            )
        permutation = self._rng(split_index).permutation(n_samples)
        # Group the shuffled indices by class, keeping the shuffled order within each class.
        grouped = permutation[np.argsort(labels[permutation], kind="stable")]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        return np.concatenate(
            [
                grouped[start : start + n_valid]
                for start, n_valid in zip(starts.tolist(), n_valid_per_class.tolist(), strict=True)
            ]
        )
