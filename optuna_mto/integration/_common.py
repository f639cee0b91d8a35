"""What the framework integrations share."""

from __future__ import annotations

from optuna_mto._step.trial import SplitTrial
from optuna_mto._study.frameworks import companion_refusal
from optuna_mto._validation import check_choice

__all__ = ["check_callback_args", "refuse_companions"]


def refuse_companions(trial: SplitTrial, name: str) -> None:
    """Refuse a transfer strategy whose companion models a framework callback cannot train.

    A strategy may need models beside the split's, ``trial.companions``, trained on the
    split's data between reports (AMTO's explorer). A callback inside another framework's
    training loop cannot train them; without that, AMTO would silently become a lagged
    copy of a donor. ``optimize`` refuses it once before any split starts when it finds the
    callback in the objective's code (see ``optuna_mto._study.frameworks``); this catches the rest.

    Raises:
        ValueError: If the study's transfer manager has companions to train.
    """
    manager = trial._shared.manager
    if manager.has_trainable_companions:
        raise ValueError(companion_refusal(name, type(manager).__name__))


def check_callback_args(trial: object, step: str, steps: tuple[str, ...], name: str) -> None:
    """Check a framework callback's trial and step; refuse trainable companions.

    Raises:
        TypeError: If ``trial`` is not the :class:`SplitTrial` the objective received.
        ValueError: For an unknown ``step``, or a strategy with companions to train.
    """
    if not isinstance(trial, SplitTrial):
        raise TypeError(
            f"{name} needs the optuna_mto.SplitTrial the objective received, but got "
            f"{type(trial).__name__}."
        )
    check_choice("step", step, steps)
    refuse_companions(trial, name)
