"""Exceptions raised by optuna-mto."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigConflictError",
    "DatasetMismatchError",
    "MTOError",
    "SplitsGivenUpError",
]


class MTOError(Exception):
    """Base class of every error raised by optuna-mto."""


class ConfigConflictError(MTOError, ValueError):
    """A study was opened with a configuration different from the one it was created with."""


class DatasetMismatchError(MTOError, ValueError):
    """A worker passed a dataset that differs from the one the study was split on."""


class CheckpointError(MTOError):
    """A checkpoint is missing, truncated, corrupted or not a tensors-only file."""


class SplitsGivenUpError(MTOError, RuntimeError):
    """Splits of a study failed more often than their retry or preemption budget allows.

    Attributes:
        given_up: One line per given-up split: split, trial, attempts and the cause.
    """

    def __init__(self, message: str, given_up: list[str]) -> None:
        super().__init__(message)
        self.given_up = given_up
