"""Exceptions raised by optuna-mto."""

from __future__ import annotations

__all__ = [
    "ArchitectureMismatchError",
    "CallbackError",
    "CheckpointError",
    "ConfigConflictError",
    "DatasetMismatchError",
    "MTOError",
    "NonFiniteScoreError",
    "SplitsGivenUpError",
]


class MTOError(Exception):
    """Base class of every error raised by optuna-mto."""


class ConfigConflictError(MTOError, ValueError):
    """A study was opened with a configuration different from the one it was created with."""


class DatasetMismatchError(MTOError, ValueError):
    """A worker passed a dataset that differs from the one the study was split on."""


class CallbackError(MTOError, RuntimeError):
    """A callback passed to ``optimize`` failed.

    Raised before any split starts when a callback's ``prepare(study)`` fails (nothing
    ran), and at the end of ``optimize`` when calls of a callback failed during the run:
    every split ran (a callback's error never stops a split) and each failure was
    logged, the first one with its traceback.

    Attributes:
        failures: Failed calls per callback name (empty when ``prepare`` failed).
    """

    def __init__(self, message: str, failures: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})


class CheckpointError(MTOError):
    """A checkpoint is missing, truncated, corrupted or not a tensors-only file."""


class NonFiniteScoreError(MTOError, ValueError):
    """A split reported, or its evaluate function returned, NaN or an infinity.

    The split's code failed: the attempt counts against ``max_retries``, never against
    ``max_preemptions``. The message names the split, the step and the value.
    """


class ArchitectureMismatchError(MTOError, ValueError):
    """Two splits built models with different tensors, so no weights can pass between them.

    Raised at a split's first report, naming the first differing tensor and its shapes.
    """


class SplitsGivenUpError(MTOError, RuntimeError):
    """Splits of a study failed more often than their retry or preemption budget allows.

    Attributes:
        given_up: One line per given-up split: split, trial, attempts and the cause.
    """

    def __init__(self, message: str, given_up: list[str]) -> None:
        super().__init__(message)
        self.given_up = given_up
