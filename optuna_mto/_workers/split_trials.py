"""Reading the splits' trials: each split's current trial, and how its transfers count."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from optuna_mto._storage.schema import SPLIT_KEY

if TYPE_CHECKING:
    from optuna_mto._step.events import TransferEvent

__all__ = ["count_transfers", "latest_split_trials", "transfer_tried"]


def latest_split_trials(
    trials: list[optuna.trial.FrozenTrial],
) -> dict[int, optuna.trial.FrozenTrial]:
    """Return, per split, its completed trial (or else its latest attempt)."""
    out: dict[int, optuna.trial.FrozenTrial] = {}
    for trial in trials:
        split = trial.system_attrs.get(SPLIT_KEY)
        if split is None:
            continue
        held = out.get(split)
        if held is None or held.state != TrialState.COMPLETE:
            if trial.state == TrialState.COMPLETE or held is None or trial.number > held.number:
                out[split] = trial
    return out


def transfer_tried(event: TransferEvent | Mapping[str, Any]) -> bool:
    """Return True if a transfer attempt was tried: a candidate was scored.

    The one rule for "tried" in every count of transfers ("kept/tried"): an attempt is
    tried unless it records why nothing was (``reason``, e.g. an unreadable donor
    checkpoint). The split's trial counts its blackboard record's ``tried`` the same way.

    Args:
        event: A :class:`~optuna_mto.TransferEvent` or its stored dict form.
    """
    reason = event.get("reason") if isinstance(event, Mapping) else event.reason
    return not reason


def count_transfers(events: Iterable[TransferEvent | Mapping[str, Any]]) -> tuple[int, int]:
    """Return ``(kept, tried)`` of transfer events (see :func:`transfer_tried`).

    Args:
        events: :class:`~optuna_mto.TransferEvent` objects or their stored dict forms.
    """
    kept = tried = 0
    for event in events:
        accepted = event.get("accepted") if isinstance(event, Mapping) else event.accepted
        kept += bool(accepted)
        tried += transfer_tried(event)
    return kept, tried
