"""What the framework integrations share."""

from __future__ import annotations

from optuna_mto._frameworks import explorer_refusal
from optuna_mto._trial import SplitTrial
from optuna_mto._validation import check_choice

__all__ = ["check_callback_args", "refuse_explorer"]


def refuse_explorer(trial: SplitTrial, name: str) -> None:
    """Refuse a transfer strategy whose explorer a framework callback cannot train.

    AMTO (``AdaptiveTransfer``) needs a second model, ``trial.explorer``, trained on the
    split's data between reports. A callback inside another framework's training loop
    cannot train it; without that, AMTO would silently become a lagged copy of a donor.
    ``optimize`` refuses it once before any split starts when it finds the callback in the
    objective's code (see ``optuna_mto._frameworks``); this catches the rest.

    Raises:
        ValueError: If the study's transfer manager uses an explorer.
    """
    manager = trial._shared.manager
    if manager.uses_explorer:
        raise ValueError(explorer_refusal(name, type(manager).__name__))


def check_callback_args(trial: object, step: str, steps: tuple[str, ...], name: str) -> None:
    """Check a framework callback's trial and step, and refuse an explorer strategy.

    Raises:
        TypeError: If ``trial`` is not the :class:`SplitTrial` the objective received.
        ValueError: For an unknown ``step``, or a strategy that needs an explorer.
    """
    if not isinstance(trial, SplitTrial):
        raise TypeError(
            f"{name} needs the optuna_mto.SplitTrial the objective received, but got "
            f"{type(trial).__name__}."
        )
    check_choice("step", step, steps)
    refuse_explorer(trial, name)
