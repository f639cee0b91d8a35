"""The study's Optuna sampler and pruner: recorded at creation, rebuilt by remote workers.

Workers started by ``optimize`` get the very objects the study was opened with (pickled
into each worker process). A worker started elsewhere (``optuna-mto worker`` on another
machine) opens the study from its URL alone; it gets the sampler and pruner it is given
(``load_study(sampler=..., pruner=...)``, ``optuna-mto worker --sampler mod:attr``), or
else the classes recorded when the study was created, rebuilt with their default
arguments (with a warning when that is not Optuna's own default, since the arguments,
a seed among them, cannot be recorded in general).
"""

from __future__ import annotations

from typing import Any

import optuna

from optuna_mto._logging import get_logger
from optuna_mto._storage.schema import OPTUNA_PARTS_KEY

__all__ = ["OPTUNA_PARTS_KEY", "describe", "rebuild"]

#: Study system attribute: ``{"sampler": class name, "pruner": class name}``.
_DEFAULTS = {"sampler": "TPESampler", "pruner": "MedianPruner"}
_MODULES = {"sampler": optuna.samplers, "pruner": optuna.pruners}

_logger = get_logger(__name__)


def describe(
    sampler: optuna.samplers.BaseSampler | None, pruner: optuna.pruners.BasePruner | None
) -> dict[str, str]:
    """Return the JSON description stored in the study (``None`` means Optuna's default)."""
    return {
        "sampler": _DEFAULTS["sampler"] if sampler is None else type(sampler).__name__,
        "pruner": _DEFAULTS["pruner"] if pruner is None else type(pruner).__name__,
    }


def check(kind: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is None or an Optuna sampler / pruner."""
    base = optuna.samplers.BaseSampler if kind == "sampler" else optuna.pruners.BasePruner
    if value is not None and not isinstance(value, base):
        raise ValueError(
            f"{kind} must be an Optuna {base.__name__} instance such as optuna.{kind}s."
            f"{_DEFAULTS[kind]}(), but got {kind}={value!r}."
        )


def rebuild(kind: str, given: Any, stored: dict[str, str] | None, study_name: str) -> Any:
    """Return ``given``, or the recorded class rebuilt with default arguments, or None.

    Args:
        kind: ``"sampler"`` or ``"pruner"``.
        given: What the caller passed (wins when not None).
        stored: The study's :data:`OPTUNA_PARTS_KEY` record (None for older studies).
        study_name: For the warning.
    """
    check(kind, given)
    if given is not None or not stored:
        return given
    name = stored.get(kind, _DEFAULTS[kind])
    if name == _DEFAULTS[kind]:
        return None  # Optuna builds its default itself
    cls = getattr(_MODULES[kind], name, None)
    if not isinstance(cls, type):
        _logger.warning(
            "Study %r was created with the custom %s %s; this worker uses Optuna's default "
            "%s. Pass load_study(..., %s=...) or optuna-mto worker --%s module:attr.",
            study_name, kind, name, _DEFAULTS[kind], kind, kind,
        )  # fmt: skip
        return None
    try:
        rebuilt = cls()
    except TypeError as err:  # e.g. ThresholdPruner: no default for its bounds
        _logger.warning(
            "Study %r was created with %s %s, which cannot be rebuilt without its "
            "arguments (%s); this worker uses Optuna's default %s. Pass "
            "load_study(..., %s=...) or optuna-mto worker --%s module:attr to use it.",
            study_name, kind, name, err, _DEFAULTS[kind], kind, kind,
        )  # fmt: skip
        return None
    _logger.warning(
        "Study %r was created with %s %s; this worker rebuilds it with default arguments "
        "(its arguments, a seed among them, are not stored). Pass load_study(..., %s=...) "
        "or optuna-mto worker --%s module:attr to use the same settings.",
        study_name, kind, name, kind, kind,
    )  # fmt: skip
    return rebuilt
