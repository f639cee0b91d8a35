"""Relation scores between splits over time, as recorded by an adaptive transfer strategy."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from optuna_mto._storage.schema import RELATIONS_ATTR_PREFIX
from optuna_mto.visualization._common import empty_figure, split_color, split_trials

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["NO_RELATIONS_MESSAGE", "plot_relations", "relation_scores"]

#: What the figure says when no trial recorded relation scores (user attrs
#: ``relations:<step:06d>`` = ``{"step": int, "scores": {"<donor>": float}}``).
NO_RELATIONS_MESSAGE = "no relation scores recorded (adaptive transfer not used)"


def _parse(value: Any) -> tuple[int, dict[int, float]] | None:
    if not isinstance(value, dict) or not isinstance(value.get("scores"), dict):
        return None
    try:
        step = int(value["step"])
        scores = {int(d): float(s) for d, s in value["scores"].items() if s is not None}
    except (KeyError, TypeError, ValueError):
        return None
    return step, scores


def relation_scores(study: MTOStudy) -> dict[int, dict[int, list[tuple[int, float]]]]:
    """Read the relation scores of the splits' current runs.

    An adaptive transfer strategy records, on the receiving split's trial, the user
    attr ``relations:<step>`` = ``{"step": step, "scores": {"<donor split>": score}}``:
    how related it deems each other split at that step. Malformed values are ignored.

    Args:
        study: The study.

    Returns:
        ``{receiver: {donor: [(step, score), ...]}}`` with steps ascending.
    """
    out: dict[int, dict[int, list[tuple[int, float]]]] = {}
    for receiver, trial in split_trials(study).items():
        series: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
        for key, value in trial.user_attrs.items():
            parsed = _parse(value) if key.startswith(RELATIONS_ATTR_PREFIX) else None
            if parsed is None:
                continue
            step, scores = parsed
            for donor, score in scores.items():
                if not math.isnan(score):
                    series[donor].append((step, score))
        if series:
            out[receiver] = {d: sorted(series[d]) for d in sorted(series)}
    return out


def plot_relations(study: MTOStudy) -> go.Figure:
    """Plot how related each split deemed the others over the report steps.

    One row of the figure per receiving split, one line per donor in that row, in the
    donor's colour (``name="split d"``, ``meta={"receiver": r, "donor": d}``). Without
    any ``relations:`` user attr (a strategy other than an adaptive one), the figure
    is empty but for the note ``"no relation scores recorded (adaptive transfer not
    used)"``.

    Args:
        study: The study.

    Returns:
        A :class:`plotly.graph_objects.Figure`.
    """
    title = "Relation scores (receiver ← donor)"
    relations = relation_scores(study)
    if not relations:
        return empty_figure(title, NO_RELATIONS_MESSAGE)
    receivers = list(relations)
    figure = make_subplots(
        rows=len(receivers),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.08, 0.3 / len(receivers)),
        subplot_titles=[f"split {r} receives" for r in receivers],
    )
    shown: set[int] = set()
    for row, receiver in enumerate(receivers, start=1):
        for donor, points in relations[receiver].items():
            figure.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="lines+markers",
                    name=f"split {donor}",
                    legendgroup=f"split {donor}",
                    showlegend=donor not in shown,
                    line={"color": split_color(donor)},
                    meta={"receiver": receiver, "donor": donor},
                    hovertemplate=(
                        f"split {receiver} ← split {donor}<br>"
                        "step %{x}: %{y:.4f}<extra></extra>"
                    ),
                ),
                row=row,
                col=1,
            )
            shown.add(donor)
    figure.update_xaxes(title_text="step", row=len(receivers), col=1)
    figure.update_layout(title={"text": title}, legend={"title": {"text": "donor"}})
    return figure
