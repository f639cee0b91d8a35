"""A short, process-independent digest of a dataset.

A worker checks with it that it was handed the same data the study was split on: the
digest is stored in the study when it is created and compared in every worker.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from optuna_mto._data.arrays import to_numpy
from optuna_mto._validation import check_int

__all__ = ["dataset_fingerprint"]

_FINGERPRINT_VERSION = b"optuna-mto-dataset-fingerprint-v1"
_FINGERPRINT_MAX_ROWS = 64
_FINGERPRINT_DECIMALS = 6
_FINGERPRINT_HEX_CHARS = 16


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
    check_int("n_samples", n_samples, 0, numpy=True)
    hasher = hashlib.sha256(_FINGERPRINT_VERSION)
    hasher.update(b"n_samples=%d;" % int(n_samples))

    if targets is not None:
        target_array = to_numpy(targets)
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
            rows = np.stack([to_numpy(data[0])])
        else:
            # Evenly spaced, integer arithmetic only: first and last rows always included.
            picked = [i * (n_rows - 1) // (n_picked - 1) for i in range(n_picked)]
            rows = np.stack([to_numpy(data[i]) for i in picked])
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
