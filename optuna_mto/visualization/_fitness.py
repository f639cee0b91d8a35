"""Every split's reported values over the report steps, with its transfer attempts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go

from optuna_mto.visualization._common import (
    empty_figure,
    event_hover,
    split_color,
    split_trials,
)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from optuna_mto._step.events import TransferEvent
    from optuna_mto._study.study import MTOStudy

__all__ = ["plot_fitness"]


def plot_fitness(study: MTOStudy) -> go.Figure:
    """Plot each split's reported value per report step, and its transfer attempts.

    One line per split (``name="split k"``) holds the intermediate values of the
    split's current trial in step order: the value each step reported *before* its
    transfer decision (the fitness it published is the kept candidate's score when a
    transfer was kept). Two marker traces show the transfer attempts of all splits:
    ``"transfer kept"`` at ``(step, after)`` (the score of the donor's weights on the
    receiver's validation set, which the receiver continued from) and
    ``"transfer rejected"`` at ``(step, before)`` on the receiver's line. Their
    ``customdata`` rows are ``[receiver, donor, before, after]`` and their hover text
    names the donor.

    Args:
        study: The study.

    Returns:
        A :class:`plotly.graph_objects.Figure`.
    """
    title = f"Fitness per split ({study.direction})"
    trials = split_trials(study)
    if not any(t.intermediate_values for t in trials.values()):
        return empty_figure(title, "no split has reported yet")
    figure = go.Figure()
    for split, trial in trials.items():
        figure.add_trace(_values_trace(split, trial))
    events = [e for e in study.transfers() if e.receiver in trials]
    kept = [e for e in events if e.accepted]
    rejected = [e for e in events if not e.accepted]
    figure.add_trace(_transfer_trace("transfer kept", kept, "star"))
    figure.add_trace(_transfer_trace("transfer rejected", rejected, "x"))
    last_step = max(max(t.intermediate_values, default=0) for t in trials.values())
    if last_step <= 20:
        figure.update_xaxes(tick0=0, dtick=1)  # whole steps, not 0.5
    figure.update_layout(
        title={"text": title},
        xaxis_title="step",
        yaxis_title="reported value",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def _values_trace(split: int, trial: FrozenTrial) -> go.Scatter:
    """The split's line: its trial's intermediate values in step order."""
    steps = sorted(trial.intermediate_values)
    return go.Scatter(
        x=steps,
        y=[trial.intermediate_values[s] for s in steps],
        mode="lines+markers",
        name=f"split {split}",
        legendgroup=f"split {split}",
        line={"color": split_color(split)},
        marker={"size": 5},
        customdata=[[split, trial.number]] * len(steps),
        hovertemplate=(
            f"split {split} (trial {trial.number})<br>step %{{x}}: %{{y:.4f}}<extra></extra>"
        ),
    )


def _transfer_trace(name: str, group: list[TransferEvent], symbol: str) -> go.Scatter:
    """One marker per transfer attempt in ``group``, in its receiver's color."""
    return go.Scatter(
        x=[e.step for e in group],
        y=[e.after if e.accepted else e.before for e in group],
        mode="markers",
        name=name,
        marker={
            "symbol": symbol,
            "size": 13 if symbol == "star" else 10,
            "color": [split_color(e.receiver) for e in group],
            "line": {"width": 1, "color": "black"},
        },
        customdata=[[e.receiver, e.donor, e.before, e.after] for e in group],
        hovertext=[event_hover(e) for e in group],
        hoverinfo="text",
    )
