"""The K x K cross-split matrix as an annotated heatmap, rows in ranking order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from optuna_mto._study.summary import CrossSplitSummary, format_number

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["plot_cross_split"]


def _row_label(summary: CrossSplitSummary, split: int) -> str:
    if split in summary.ranking:
        position = summary.ranking.index(split) + 1
        return f"#{position} split {split} (mean {format_number(summary.mean[split])})"
    return f"– split {split} (not finished)"


def plot_cross_split(study: MTOStudy, summary: CrossSplitSummary | None = None) -> go.Figure:
    """Plot the cross-split validation matrix of the splits' best models.

    Row i is a split's best model, column j split j's validation set. Rows follow the
    summary's table (:attr:`CrossSplitSummary.row_order`: ranked first, unfinished splits
    last with empty cells); the row
    labels carry rank and mean (``"#1 split 2 (mean 0.9712)"``) and each cell its
    value. ``figure.data[0].z`` is ``summary.matrix`` with its rows in that order.

    Args:
        study: The study.
        summary: Its summary, if already computed (saves reading the trials again).

    Returns:
        A :class:`plotly.graph_objects.Figure`.
    """
    summary = study.summary() if summary is None else summary
    rows = summary.row_order
    z = summary.matrix[rows] if rows else np.empty((0, summary.n_splits))
    text = [[format_number(v, missing="") for v in row] for row in z]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"val {j}" for j in range(summary.n_splits)],
            y=[_row_label(summary, s) for s in rows],
            text=text,
            texttemplate="%{text}",
            customdata=[[s] * summary.n_splits for s in rows],
            hovertemplate="model of split %{customdata} on %{x}: %{z:.4f}<extra></extra>",
            colorscale="Viridis",
            reversescale=summary.direction == "minimize",
            colorbar={"title": {"text": "score"}},
            hoverongaps=False,
            name="cross-split",
        )
    )
    best = summary.best_split
    title = "Cross-split validation"
    if best is not None:
        title += f": split {best} is exported"
    figure.update_layout(
        title={"text": title},
        xaxis={"title": {"text": "validation set"}, "side": "bottom"},
        yaxis={"title": {"text": "best model of"}, "autorange": "reversed"},
    )
    return figure
