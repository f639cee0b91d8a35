"""Who gave weights to whom: the splits on a circle, one arrow per (donor, receiver)."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from optuna_mto._study.summary import transfer_tried
from optuna_mto.visualization._common import split_color

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["plot_transfer_graph", "transfer_counts"]

_OFFSET = 0.05  # sideways shift of an arrow, so that a->b and b->a do not overlap
_LABEL_AT = 0.62  # where along an arrow its kept/tried label sits


def transfer_counts(study: MTOStudy) -> dict[tuple[int, int], tuple[int, int, int]]:
    """Count the transfer attempts of the splits' current runs per (donor, receiver).

    Args:
        study: The study.

    Returns:
        ``{(donor, receiver): (kept, tried, skipped)}`` for every pair with at least
        one attempt. ``tried`` counts the attempts that scored a candidate, by the rule
        of :class:`~optuna_mto.CrossSplitSummary` and the progress view
        (``optuna_mto._study.summary.transfer_tried``); ``skipped`` those that recorded why
        nothing was scored (e.g. an unreadable donor checkpoint).
    """
    kept: Counter[tuple[int, int]] = Counter()
    tried: Counter[tuple[int, int]] = Counter()
    skipped: Counter[tuple[int, int]] = Counter()
    for event in study.transfers():
        pair = (event.donor, event.receiver)
        if not transfer_tried(event):
            skipped[pair] += 1
            continue
        tried[pair] += 1
        kept[pair] += int(event.accepted)
    pairs = sorted(set(tried) | set(skipped))
    return {p: (kept[p], tried[p], skipped[p]) for p in pairs}


def _position(split: int, n_splits: int) -> tuple[float, float]:
    if n_splits == 1:
        return 0.0, 0.0
    angle = math.pi / 2 - 2 * math.pi * split / n_splits  # split 0 on top, clockwise
    return math.cos(angle), math.sin(angle)


def plot_transfer_graph(study: MTOStudy) -> go.Figure:
    """Plot the transfer attempts between splits as a directed graph.

    The K splits are nodes on a circle (trace ``"splits"``). Each (donor, receiver)
    pair with attempts is an arrow from donor to receiver, wider the more attempts it
    has, faint when none was kept, labelled ``"kept/tried"`` near its head. The
    counts are also the data of the (invisible, hoverable) trace ``"transfers"``:
    its ``text`` is the labels and its ``customdata`` rows are
    ``[donor, receiver, kept, tried, skipped]`` (see :func:`transfer_counts`); the
    node trace's rows are ``[split, kept_given, tried_given, kept_received,
    tried_received]``.

    Args:
        study: The study.

    Returns:
        A :class:`plotly.graph_objects.Figure`.
    """
    k = study.n_splits
    counts = transfer_counts(study)
    positions = [_position(s, k) for s in range(k)]
    figure = go.Figure()
    widest = max((tried for _, tried, _ in counts.values()), default=0)
    label_x, label_y, label_text, label_data, label_hover = [], [], [], [], []
    for (donor, receiver), (kept, tried, skipped) in counts.items():
        if not (0 <= donor < k and 0 <= receiver < k):
            continue
        (x0, y0), (x1, y1) = positions[donor], positions[receiver]
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = (y1 - y0) / length * _OFFSET, -(x1 - x0) / length * _OFFSET
        width = 1.0 + 5.0 * max(tried, 1) / max(widest, 1)
        figure.add_annotation(
            x=x1 + nx, y=y1 + ny, ax=x0 + nx, ay=y0 + ny,
            xref="x", yref="y", axref="x", ayref="y",
            showarrow=True, arrowhead=2, arrowsize=0.8, arrowwidth=width,
            arrowcolor=split_color(donor), opacity=0.35 + 0.65 * (kept > 0),
            standoff=22, startstandoff=22, text="",
        )  # fmt: skip
        # Nearer the receiver than the middle: crossing diagonals keep their labels apart.
        label_x.append(x0 + _LABEL_AT * (x1 - x0) + 1.5 * nx)
        label_y.append(y0 + _LABEL_AT * (y1 - y0) + 1.5 * ny)
        label_text.append(f"{kept}/{tried}")
        label_data.append([donor, receiver, kept, tried, skipped])
        hover = f"split {donor} → split {receiver}: {kept} kept of {tried} tried"
        label_hover.append(hover + (f", {skipped} skipped" if skipped else ""))
        figure.add_annotation(
            x=label_x[-1], y=label_y[-1], xref="x", yref="y", text=label_text[-1],
            showarrow=False, bgcolor="white", font={"size": 13}, borderpad=1,
        )  # fmt: skip
    # The labels' data (and hover boxes) as a trace; the visible labels are the
    # annotations above, drawn over the arrows on a white background.
    figure.add_trace(
        go.Scatter(
            x=label_x,
            y=label_y,
            mode="markers",
            name="transfers",
            text=label_text,
            marker={"size": 24, "opacity": 0},
            customdata=label_data,
            hovertext=label_hover,
            hoverinfo="text",
            showlegend=False,
        )
    )

    def total(split: int, index: int, role: int) -> int:
        return sum(c[index] for pair, c in counts.items() if pair[role] == split)

    nodes = [[s, total(s, 0, 0), total(s, 1, 0), total(s, 0, 1), total(s, 1, 1)] for s in range(k)]
    figure.add_trace(
        go.Scatter(
            x=[p[0] for p in positions],
            y=[p[1] for p in positions],
            mode="markers+text",
            name="splits",
            text=[str(s) for s in range(k)],
            textfont={"color": "white", "size": 14},
            marker={"size": 36, "color": [split_color(s) for s in range(k)]},
            customdata=nodes,
            hovertext=[
                f"split {s}: gave {g}/{gt}, received {r}/{rt} (kept/tried)"
                for s, g, gt, r, rt in nodes
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    title = "Transfers: donor → receiver (kept/tried)"
    if not counts:
        title += ", none recorded yet"
    axis = {"visible": False, "range": [-1.35, 1.35]}
    figure.update_layout(
        title={"text": title},
        xaxis=axis,
        yaxis={**axis, "scaleanchor": "x", "scaleratio": 1},
        plot_bgcolor="white",
        hovermode="closest",
    )
    return figure
