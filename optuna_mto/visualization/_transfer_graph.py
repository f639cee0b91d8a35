"""Who gave weights to whom: the splits on a circle, one arrow per (donor, receiver)."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

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
    labels = _draw_arrows(figure, counts, positions)
    # The labels' data (and hover boxes) as a trace; the visible labels are the
    # annotations drawn over the arrows on a white background.
    figure.add_trace(
        go.Scatter(
            **labels,
            mode="markers",
            name="transfers",
            marker={"size": 24, "opacity": 0},
            hoverinfo="text",
            showlegend=False,
        )
    )
    figure.add_trace(_node_trace(counts, positions))
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


def _draw_arrows(
    figure: go.Figure,
    counts: dict[tuple[int, int], tuple[int, int, int]],
    positions: list[tuple[float, float]],
) -> dict[str, list[Any]]:
    """Draw one labelled arrow per (donor, receiver); return the labels as trace data."""
    k = len(positions)
    widest = max((tried for _, tried, _ in counts.values()), default=0)
    labels: dict[str, list[Any]] = {"x": [], "y": [], "text": [], "customdata": [], "hovertext": []}
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
        labels["x"].append(x0 + _LABEL_AT * (x1 - x0) + 1.5 * nx)
        labels["y"].append(y0 + _LABEL_AT * (y1 - y0) + 1.5 * ny)
        labels["text"].append(f"{kept}/{tried}")
        labels["customdata"].append([donor, receiver, kept, tried, skipped])
        hover = f"split {donor} → split {receiver}: {kept} kept of {tried} tried"
        labels["hovertext"].append(hover + (f", {skipped} skipped" if skipped else ""))
        figure.add_annotation(
            x=labels["x"][-1], y=labels["y"][-1], xref="x", yref="y", text=labels["text"][-1],
            showarrow=False, bgcolor="white", font={"size": 13}, borderpad=1,
        )  # fmt: skip
    return labels


def _node_trace(
    counts: dict[tuple[int, int], tuple[int, int, int]], positions: list[tuple[float, float]]
) -> go.Scatter:
    """The splits as nodes, with the transfers each gave and received as their data."""
    k = len(positions)

    def total(split: int, index: int, role: int) -> int:
        return sum(c[index] for pair, c in counts.items() if pair[role] == split)

    nodes = [[s, total(s, 0, 0), total(s, 1, 0), total(s, 0, 1), total(s, 1, 1)] for s in range(k)]
    return go.Scatter(
        x=[p[0] for p in positions],
        y=[p[1] for p in positions],
        mode="markers+text",
        name="splits",
        text=[str(s) for s in range(k)],
        textfont={"color": "white", "size": 14},
        marker={"size": 36, "color": [split_color(s) for s in range(k)]},
        customdata=nodes,
        hovertext=[
            f"split {s}: gave {g}/{gt}, received {r}/{rt} (kept/tried)" for s, g, gt, r, rt in nodes
        ],
        hoverinfo="text",
        showlegend=False,
    )
