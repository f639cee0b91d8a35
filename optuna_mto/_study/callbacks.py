"""The callbacks of ``optimize``: prepared once up front, guarded so they never stop a split.

A callback is a record of the run, not part of it. One that raises (Optuna's
``callback(study, frozen_trial)`` when a split ends, a tracker's ``on_report(trial,
result)`` at a report) is logged with its name and counted, and the split goes on: no
retry, no lost worker. The counts go to the study's storage (one study system attribute
per callback and trial), so those of worker processes add up, and ``optimize`` raises
:class:`~optuna_mto.CallbackError` at the end naming each callback and how many of its
calls failed. A callback's ``prepare(study)``, if it has one, runs once in the process
that calls ``optimize``, before any split starts: a tracker checks its store and creates
its tables there, so the workers never race to do it.
"""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import optuna

from optuna_mto._errors import CallbackError
from optuna_mto._logging import get_logger
from optuna_mto._storage.optuna_internals import storage_of, study_id_of, trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import CALLBACK_FAILURES_PREFIX, SPLIT_KEY

__all__ = [
    "GuardedCallback",
    "callback_name",
    "callbacks_error",
    "guard",
    "log_error",
    "prepare_callbacks",
]

_logger = get_logger(__name__)


def callback_name(callback: Any) -> str:
    """``MLflowCallback`` for an instance, the function's name for a function."""
    inner = getattr(callback, "func", callback)  # functools.partial
    if inspect.isroutine(inner):
        return getattr(inner, "__name__", repr(inner))
    return type(inner).__name__


def prepare_callbacks(callbacks: Sequence[Any], study: optuna.Study) -> None:
    """Call each callback's ``prepare(study)`` once, before any split starts.

    Raises:
        CallbackError: Naming the callback whose ``prepare`` raised; no split ran.
    """
    for callback in callbacks:
        prepare = getattr(callback, "prepare", None)
        if not callable(prepare):
            continue
        try:
            prepare(study)
        except Exception as err:
            raise CallbackError(
                f"{callback_name(callback)} could not start, so no split ran: "
                f"{type(err).__name__}: {str(err).rstrip('.')}. Fix it (or leave the callback "
                "out) and run optimize again."
            ) from err


def guard(callbacks: Sequence[Any]) -> tuple[list[GuardedCallback], str]:
    """Wrap each callback in a guard; return them and this ``optimize`` run's id."""
    run = uuid.uuid4().hex[:12]
    names = [callback_name(c) for c in callbacks]
    unique = [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]
    guarded = [
        (_GuardedReporter if callable(getattr(c, "on_report", None)) else GuardedCallback)(
            c, name, f"{run}:{i}"
        )
        for i, (c, name) in enumerate(zip(callbacks, unique, strict=True))
    ]
    return guarded, run


class GuardedCallback:
    """Calls one callback; logs and counts its exceptions instead of raising them.

    Args:
        callback: The user's callback.
        name: Its name in messages.
        key: ``<run>:<index>``: where its failures are counted.
    """

    def __init__(self, callback: Any, name: str, key: str) -> None:
        self.callback, self.name, self.key = callback, name, key
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._failed: dict[int, list[Any]] = {}  # trial id -> [count, first error]
        self._logged = False

    def __getstate__(self) -> dict[str, Any]:
        return {"callback": self.callback, "name": self.name, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            self.callback(study, trial)
        except Exception as err:
            split = trial.system_attrs.get(SPLIT_KEY, "?")
            where = f"when split {split} ended (trial {trial.number}, {trial.state.name})"
            self._failed_call(err, study, trial_id_of(trial), where)  # type: ignore[arg-type]

    def _failed_call(self, err: Exception, study: optuna.Study, trial_id: int, where: str) -> None:
        reason = f"{type(err).__name__}: {err}"
        with self._lock:
            entry = self._failed.setdefault(trial_id, [0, reason[:500]])
            entry[0] += 1
            value = {"callback": self.name, "failed": entry[0], "error": entry[1]}
            first, self._logged = not self._logged, True
        if first:  # once per callback and worker; the rest are counted (and at debug level)
            _logger.error(
                "Callback %s failed %s: %s. The split goes on; optimize raises CallbackError "
                "at the end, naming each failed callback.", self.name, where, reason,
                exc_info=err,
            )  # fmt: skip
        else:
            _logger.debug("Callback %s failed %s: %s", self.name, where, reason)
        attr = f"{CALLBACK_FAILURES_PREFIX}{self.key}:{trial_id}"
        try:
            retry_transient(storage_of(study).set_study_system_attr, study_id_of(study), attr,
                            value)  # fmt: skip
        except Exception as store_err:  # noqa: BLE001 - the split's own next write will tell
            _logger.warning("Could not count a failure of callback %s: %s", self.name, store_err)


class _GuardedReporter(GuardedCallback):
    """A guarded callback that is also called at every report."""

    def on_report(self, trial: Any, result: Any) -> None:
        try:
            self.callback.on_report(trial, result)
        except Exception as err:
            where = f"at split {trial.split}'s report of step {result.step}"
            optuna_trial = trial.optuna_trial
            self._failed_call(err, optuna_trial.study, trial_id_of(optuna_trial), where)


def callbacks_error(study: optuna.Study, run: str) -> CallbackError | None:
    """The error naming each callback whose calls failed in ``optimize`` run ``run``."""
    attrs = retry_transient(storage_of(study).get_study_system_attrs, study_id_of(study))
    prefix = f"{CALLBACK_FAILURES_PREFIX}{run}:"
    failures: dict[str, int] = {}
    runs: dict[str, int] = {}
    first: dict[str, str] = {}
    for key, value in sorted(attrs.items()):
        if key.startswith(prefix):
            name = value["callback"]
            failures[name] = failures.get(name, 0) + int(value["failed"])
            runs[name] = runs.get(name, 0) + 1
            first.setdefault(name, value["error"])
    if not failures:
        return None
    lines = [
        f"{name} failed {n} time{'s' if n != 1 else ''} in {runs[name]} split "
        f"run{'s' if runs[name] != 1 else ''} (first: {first[name]})"
        for name, n in failures.items()
    ]
    return CallbackError(
        "; ".join(lines) + ". Every split ran and its results are in the study, but what "
        "these callbacks record is incomplete; the log has the first failure's traceback.",
        failures,
    )


def log_error(study: optuna.Study, run: str) -> None:
    """Log the callbacks' failures, for when ``optimize`` raises another error first."""
    error = callbacks_error(study, run)
    if error is not None:
        _logger.error("%s", error)
