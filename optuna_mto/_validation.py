"""Argument checks shared by the public classes: clear ValueErrors naming the value."""

from __future__ import annotations

from typing import Any

__all__ = ["check_int", "check_number"]


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) in ``[low, high]``."""
    bad = isinstance(value, bool) or not isinstance(value, int) or value < low
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
) -> None:
    """Raise ValueError unless ``value`` is a real number (not a bool) in the interval.

    The interval is ``[low, high]``; ``low_open`` / ``high_open`` exclude an end;
    ``kind`` names the expected type in the message ("number", "float").
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
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
