"""Argument checks shared by the public classes: clear ValueErrors naming the value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from typing import Any

from optuna_mto._errors import NonFiniteScoreError

__all__ = [
    "check_choice",
    "check_finite_score",
    "check_int",
    "check_name",
    "check_number",
    "is_int",
]


def is_int(value: Any, *, numpy: bool = False) -> bool:
    """Return True for an int that is not a bool.

    Args:
        value: The value to test.
        numpy: Also accept other integral types, such as ``numpy.int64``.
    """
    kind = numbers.Integral if numpy else int
    return isinstance(value, kind) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, low: int, high: int | None = None, *, numpy: bool = False
) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) in ``[low, high]``.

    ``numpy=True`` also accepts other integral types, such as ``numpy.int64``.
    """
    bad = not is_int(value, numpy=numpy) or value < low
    if not bad and high is not None and value > high:
        bad = True
    if bad:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound}, but got {name}={value!r}.")


def check_number(
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    kind: str = "number",
    numpy: bool = False,
) -> None:
    """Raise ValueError unless ``value`` is a real number (not a bool) in the interval.

    The interval is ``[low, high]``; ``low_open`` / ``high_open`` exclude an end;
    ``kind`` names the expected type in the message ("number", "float"); ``numpy=True``
    also accepts other real types, such as ``numpy.float32``. NaN is never in range.
    """
    real = numbers.Real if numpy else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, real)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        span = (
            f"> {low:g}"
            if high is None and low_open
            else (f">= {low:g}" if high is None else f"in {left}{low:g}, {high:g}{right}")
        )
        raise ValueError(f"{name} must be a {kind} {span}, but got {name}={value!r}.")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices`` (shown as given).

    An unhashable ``value`` (a list, an array) is never one of them.
    """
    if not isinstance(value, Hashable) or value not in choices:
        raise ValueError(f"{name} must be one of {choices!r}, but got {name}={value!r}.")


def check_name(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, but got {name}={value!r}.")


def check_finite_score(value: float, split: int, what: str) -> float:
    """Return ``value`` if it is a finite number; else raise :class:`NonFiniteScoreError`.

    Args:
        value: A score of the split's model.
        split: The split's index.
        what: Where the value comes from, with its step (``"the value reported at step 3"``).
    """
    if math.isfinite(value):
        return value
    raise NonFiniteScoreError(
        f"Split {split}: {what} is {value}, not a finite number. A NaN or infinite score "
        "usually means training diverged (a NaN loss): lower the learning rate, or clip the "
        "gradients (torch.nn.utils.clip_grad_norm_). This counts as an error of the split "
        "(max_retries), not as a lost worker."
    )
