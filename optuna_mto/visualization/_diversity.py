"""Diversity of the population per step: how many distinct weight families are left."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from optuna_mto.visualization._common import empty_figure, split_trials

if TYPE_CHECKING:
    from optuna_mto import MTOStudy, TransferEvent

__all__ = ["plot_diversity", "weight_families"]


def weight_families(
    events: Sequence[TransferEvent], n_splits: int, steps: Sequence[int]
) -> list[int]:
    """Return, per step, the number of distinct weight origins among the K splits.

    Every split starts as its own family. A kept transfer (a copy, or an AMTO explorer)
    puts the receiver into the family of the weights it took: the donor's family at the
    step the donor published them. K families means no weights were shared; 1 means the
    population has collapsed onto one lineage (diverging again only through training on
    different data). Computed from the event log alone: no model is loaded.

    Args:
        events: Transfer events (``study.transfers()``).
        n_splits: K.
        steps: The steps to report.
    """
    history: dict[int, tuple[list[int], list[int]]] = {k: ([-1], [k]) for k in range(n_splits)}

    def family(split: int, step: int) -> int:
        at, origin = history[split]
        return origin[bisect.bisect_right(at, step) - 1]

    for event in sorted((e for e in events if e.accepted), key=lambda e: (e.step, e.receiver)):
        if event.receiver in history and event.donor in history:
            at, origin = history[event.receiver]
            at.append(event.step)
            origin.append(family(event.donor, event.donor_step))
    return [len({family(k, step) for k in range(n_splits)}) for step in steps]


def plot_diversity(study: MTOStudy) -> go.Figure:
    """Plot the number of distinct weight families per report step (see :func:`weight_families`).

    A falling line is the population collapsing onto one split's weights (greedy copying
    tends to do that); truncation and a leakage-aware gate keep it higher.

    Returns:
        A :class:`plotly.graph_objects.Figure` with one trace named ``"weight families"``.
    """
    title = "Diversity: distinct weight families per step"
    trials = split_trials(study)
    steps = sorted({s for t in trials.values() for s in t.intermediate_values})
    if not steps:
        return empty_figure(title, "no split has reported yet")
    families = weight_families(study.transfers(), study.n_splits, steps)
    figure = go.Figure(
        go.Scatter(
            x=steps, y=families, mode="lines+markers", name="weight families", line={"shape": "hv"}
        )  # fmt: skip
    )
    axis = {"title": "families (K: none shared, 1: collapsed)", "dtick": 1}
    axis["range"] = [0.5, study.n_splits + 0.5]
    figure.update_layout(title={"text": title}, xaxis_title="step", yaxis=axis)
    return figure
