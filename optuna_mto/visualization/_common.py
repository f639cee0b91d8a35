"""Helpers shared by the figures: the splits' trials, hover texts, colours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from optuna_mto._study.summary import format_number, latest_split_trials

if TYPE_CHECKING:
    from optuna_mto import MTOStudy, TransferEvent

__all__ = [
    "empty_figure",
    "event_hover",
    "split_color",
    "split_trials",
]

_PALETTE = plotly.colors.qualitative.Plotly


def split_trials(study: MTOStudy) -> dict[int, FrozenTrial]:
    """Return each split's current trial (its completed run, else its latest), by split."""
    trials = latest_split_trials(study.study.get_trials(deepcopy=False))
    return {split: trials[split] for split in sorted(trials)}


def split_color(split: int) -> str:
    """Return the colour of ``split``, the same in every figure."""
    return _PALETTE[split % len(_PALETTE)]


def event_hover(event: TransferEvent) -> str:
    """Return the hover text of a transfer attempt, naming receiver and donor."""
    outcome = "kept" if event.accepted else "rejected"
    before = format_number(event.before)
    after = format_number(event.after, missing="not scored")
    text = (
        f"split {event.receiver} ← split {event.donor} at step {event.step}: {outcome}<br>"
        f"donor: trial {event.donor_trial}, weights of step {event.donor_step}<br>"
        f"own {before} → candidate {after} ({event.operator})"
    )
    if event.reason:
        text += f"<br>{event.reason}"
    return text


def empty_figure(title: str, message: str) -> go.Figure:
    """Return a figure with no data and ``message`` written in its middle."""
    figure = go.Figure(layout={"title": {"text": title}})
    figure.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=14
    )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure
