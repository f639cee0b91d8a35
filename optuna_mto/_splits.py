"""Deterministic (train, validation) splits of a gross training set.

The multi-task training framework of "A Novel DNN Training Framework via Data Sampling and
Multi-Task Optimization" draws ``K`` (train, validation) pairs from one gross training set and
trains one model per pair (a "split"). Every worker process must compute exactly the same indices
for a given split, so all randomness here comes from a :class:`numpy.random.Generator` seeded
only from ``(seed, split_index)`` (or ``seed`` alone for k-fold); the global :mod:`random` and
:mod:`numpy.random` states are never used.

:func:`dataset_fingerprint` gives a short, process-independent digest of a dataset so that a
worker can check that it was handed the same data the study was split on.
"""

from __future__ import annotations

import abc
import hashlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BaseSplitter",
    "KFoldSplitter",
    "RandomSplitter",
    "StratifiedSplitter",
    "dataset_fingerprint",
    "make_splitter",
]

_FINGERPRINT_VERSION = b"optuna-mto-dataset-fingerprint-v1"
_FINGERPRINT_MAX_ROWS = 64
_FINGERPRINT_DECIMALS = 6
_FINGERPRINT_HEX_CHARS = 16


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_numpy(value: Any) -> np.ndarray:
    """Convert a list, NumPy array or torch tensor to a NumPy array without importing torch."""
    if isinstance(value, np.ndarray):
        return value
    # torch.Tensor (duck-typed so that torch stays an optional, lazy dependency).
    if callable(getattr(value, "detach", None)) and callable(getattr(value, "cpu", None)):
        value = value.detach().cpu()
        try:
            return np.asarray(value.numpy())
        except (TypeError, RuntimeError):
            # dtypes NumPy cannot represent, e.g. torch.bfloat16.
            return np.asarray(value.double().numpy())
    return np.asarray(getattr(value, "numpy", lambda: value)())


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

    def __init__(self, n_splits: int, validation_fraction: float = 0.2, seed: int = 0) -> None:
        if not _is_int(n_splits) or n_splits < 1:
            raise ValueError(f"n_splits must be an integer >= 1, but got {n_splits=}.")
        if (
            not _is_real(validation_fraction)
            or not math.isfinite(validation_fraction)
            or not 0.0 < validation_fraction < 1.0
        ):
            raise ValueError(
                "validation_fraction must be a float in the open interval (0, 1), "
                f"but got {validation_fraction=}."
            )
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, but got {seed=}.")
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
        if not _is_int(n_samples) or n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2, but got {n_samples=}.")
        if not _is_int(split_index) or not 0 <= split_index < self._n_splits:
            raise ValueError(
                f"split_index must be an integer in [0, n_splits) = [0, {self._n_splits}), "
                f"but got {split_index=}."
            )
        target_array: np.ndarray | None = None
        if targets is not None:
            target_array = _to_numpy(targets)
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

    Args:
        n_splits: Number of folds; an integer ``>= 2``.
        validation_fraction: Ignored (see above), but must still lie in ``(0, 1)``.
        seed: Non-negative integer seed.

    Raises:
        ValueError: If ``n_splits < 2`` or another argument is invalid.
    """

    def __init__(self, n_splits: int, validation_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__(n_splits, validation_fraction, seed)
        if self._n_splits < 2:
            raise ValueError(
                f"KFoldSplitter needs n_splits >= 2, but got {n_splits=}. "
                "Use RandomSplitter for a single split."
            )

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


_SPLITTERS: dict[str, type[BaseSplitter]] = {
    "random": RandomSplitter,
    "kfold": KFoldSplitter,
    "stratified": StratifiedSplitter,
}


def make_splitter(
    kind: str, n_splits: int, validation_fraction: float = 0.2, seed: int = 0
) -> BaseSplitter:
    """Build a splitter by name.

    Args:
        kind: ``"random"``, ``"kfold"`` or ``"stratified"``.
        n_splits: Number of (train, validation) pairs.
        validation_fraction: Fraction of the samples that go to validation, in ``(0, 1)``
            (ignored by ``"kfold"``, whose effective fraction is ``1 / n_splits``).
        seed: Non-negative integer seed.

    Returns:
        The splitter; ``make_splitter(**splitter.get_params())`` round-trips.

    Raises:
        ValueError: If ``kind`` is unknown or another argument is invalid.
    """
    try:
        cls = _SPLITTERS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {sorted(_SPLITTERS)}, but got {kind=}.") from None
    return cls(n_splits, validation_fraction, seed)


def _hash_array(hasher: Any, tag: bytes, array: np.ndarray) -> None:
    """Feed a canonical, platform-independent encoding of ``array`` to ``hasher``."""
    shape = ",".join(str(d) for d in array.shape).encode("ascii")
    if array.dtype.kind in "biu":
        kind = b"int"
        payload = np.ascontiguousarray(array, dtype="<i8").tobytes()
    elif array.dtype.kind == "f":
        kind = b"float"
        payload = _canonical_float_bytes(array)
    else:
        kind = b"str"
        payload = "\x1f".join(str(item) for item in array.ravel().tolist()).encode("utf-8")
    hasher.update(b"%s:%s:shape=%s:len=%d:" % (tag, kind, shape, len(payload)))
    hasher.update(payload)


def _canonical_float_bytes(array: np.ndarray) -> bytes:
    values = np.round(np.asarray(array, dtype=np.float64), _FINGERPRINT_DECIMALS)
    values = values + 0.0  # -0.0 -> 0.0
    values[np.isnan(values)] = np.nan  # one NaN bit pattern
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def dataset_fingerprint(n_samples: int, targets: Any = None, data: Any = None) -> str:
    """Return a short digest identifying a dataset, identical in every process.

    The digest covers ``n_samples``, all of ``targets`` (if given) and up to 64 evenly spaced
    rows of ``data`` (if given). Data rows are converted to little-endian float64 and rounded to
    6 decimals (so equal values give equal bytes whatever the input dtype or device; float32 data
    is not guaranteed to match its float64 original, since rounding can differ at the 6th
    decimal). Integer and boolean targets are hashed as int64, float targets like data,
    and anything else through ``str`` of each label. torch is never imported: tensors are
    recognised by duck typing.

    Args:
        n_samples: Number of samples; an integer ``>= 0``.
        targets: Optional labels of length ``n_samples``: a list, NumPy array or torch tensor.
        data: Optional samples, indexable by row with ``len(data) == n_samples``: a NumPy array,
            torch tensor or sequence of numeric rows.

    Returns:
        The first 16 hex characters of a SHA-256 digest.

    Raises:
        ValueError: If ``n_samples`` is invalid or ``targets``/``data`` have a different length.
        TypeError: If the sampled rows of ``data`` are not numeric.
    """
    if not _is_int(n_samples) or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0, but got {n_samples=}.")
    hasher = hashlib.sha256(_FINGERPRINT_VERSION)
    hasher.update(b"n_samples=%d;" % int(n_samples))

    if targets is not None:
        target_array = _to_numpy(targets)
        if target_array.ndim == 0 or target_array.shape[0] != n_samples:
            raise ValueError(
                f"targets must have one entry per sample (length n_samples={n_samples}), "
                f"but got shape {target_array.shape}."
            )
        _hash_array(hasher, b"targets", target_array)

    if data is not None:
        n_rows = len(data)
        if n_rows != n_samples:
            raise ValueError(
                f"data must have one row per sample (n_samples={n_samples}), "
                f"but got len(data)={n_rows}."
            )
        n_picked = min(n_rows, _FINGERPRINT_MAX_ROWS)
        if n_picked == 0:
            rows = np.zeros((0,), dtype=np.float64)
        elif n_picked == 1:
            rows = np.stack([_to_numpy(data[0])])
        else:
            # Evenly spaced, integer arithmetic only: first and last rows always included.
            picked = [i * (n_rows - 1) // (n_picked - 1) for i in range(n_picked)]
            rows = np.stack([_to_numpy(data[i]) for i in picked])
        try:
            payload = _canonical_float_bytes(rows)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"data rows must be numeric to be fingerprinted, but got dtype {rows.dtype}."
            ) from err
        shape = ",".join(str(d) for d in rows.shape[1:]).encode("ascii")
        hasher.update(b"data:rows=%d:row_shape=%s:len=%d:" % (n_picked, shape, len(payload)))
        hasher.update(payload)

    return hasher.hexdigest()[:_FINGERPRINT_HEX_CHARS]
