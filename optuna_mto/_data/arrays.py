"""Array conversion shared by the splitters and the dataset fingerprint."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy"]


def to_numpy(value: Any) -> np.ndarray:
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
