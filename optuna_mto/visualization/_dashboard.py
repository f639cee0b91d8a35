"""Publish the figures and a summary note into optuna-dashboard, once or while running."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from optuna_mto._extras import require
from optuna_mto._logging import get_logger
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._study.summary import format_number
from optuna_mto._validation import check_number
from optuna_mto.visualization._cross_split import plot_cross_split
from optuna_mto.visualization._diversity import plot_diversity
from optuna_mto.visualization._fitness import plot_fitness
from optuna_mto.visualization._relations import plot_relations
from optuna_mto.visualization._transfer_graph import plot_transfer_graph

if TYPE_CHECKING:
    from optuna_mto._study.config import StudyConfig
    from optuna_mto._study.study import MTOStudy
    from optuna_mto._study.summary import CrossSplitSummary

__all__ = [
    "DASHBOARD_FIGURES",
    "DashboardRefresher",
    "dashboard_note",
    "publish_to_dashboard",
    "refresh_dashboard",
]

_logger = get_logger(__name__)

#: ``graph_object_id`` under which each figure is saved; saving again overwrites it.
DASHBOARD_FIGURES: dict[str, Callable[[MTOStudy], go.Figure]] = {
    "mto-fitness": plot_fitness,
    "mto-transfer-graph": plot_transfer_graph,
    "mto-cross-split": plot_cross_split,
    "mto-relations": plot_relations,
    "mto-diversity": plot_diversity,
}


def dashboard_note(study: MTOStudy) -> str:
    """Return the Markdown note that :func:`publish_to_dashboard` saves on the study.

    It lists the configuration (K, splitter, validation fraction, seed, direction,
    transfer parameters) and the summary's ranked table (``study.summary()``): the same
    header, rows and legend as ``print(study.summary())``, written as Markdown.
    """
    config = study.config
    summary = study.summary()
    lines = [*_settings_lines(study, config), *_ranking_lines(summary), *_export_lines(summary)]
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    lines += [
        "",
        f"*Published by optuna-mto at {stamp}; figures: {', '.join(DASHBOARD_FIGURES)}. "
        "This note is overwritten at every publication.*",
    ]
    return "\n".join(lines) + "\n"


def _settings_lines(study: MTOStudy, config: StudyConfig) -> list[str]:
    """The note's heading and its table of the study's configuration."""
    transfer = dict(config.transfer)
    name = transfer.pop("name", "?")
    params = ", ".join(f"{k}={v!r}" for k, v in transfer.items())
    return [
        f"## optuna-mto study `{study.study_name}`",
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| splits (K) | {config.n_splits} |",
        f"| splitter | {config.splitter} |",
        f"| validation fraction | {config.validation_fraction} |",
        f"| seed | {config.seed} |",
        f"| direction | {study.direction} |",
        f"| transfer | `{name}({params})` |",
        f"| max retries | {config.max_retries} |",
        "",
    ]


def _ranking_lines(summary: CrossSplitSummary) -> list[str]:
    """The ranked table as Markdown, with its legend and the final outputs' scores."""
    head, rows = summary.table()
    lines = [
        f"### Ranking ({len(summary.ranking)} of {summary.n_splits} splits finished)",
        "",
    ]
    if not summary.complete:
        lines += [f"**Incomplete:** {summary.incomplete_reason}", ""]
    lines += [_markdown_row(head), _markdown_row(["---"] * len(head))]
    for cells in rows:
        rank = f"**{cells[0]}**" if cells[0] == "1" else cells[0]
        lines.append(_markdown_row([rank, *cells[1:]]))
    lines.append("")
    lines += [f"- {line}" for line in summary.legend()]
    outputs = summary.outputs_lines()
    if outputs:
        lines += ["", outputs[0], "", *(f"- {line.strip()}" for line in outputs[1:])]
    return lines


def _export_lines(summary: CrossSplitSummary) -> list[str]:
    """Which split's model is exported, and why (after a blank line)."""
    best = summary.best_split
    if best is None:
        return ["", "No split has finished yet."]
    if summary.uses_selection:
        return [
            "",
            f"The exported model is split {best}'s best (selection score "
            f"{format_number(summary.selection[best])} on the held-out rows).",  # type: ignore[index]
        ]
    return [
        "",
        f"The exported model is split {best}'s best (mean {format_number(summary.mean[best])} "
        f"over the {summary.n_splits} validation sets).",
    ]


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def publish_to_dashboard(study: MTOStudy) -> list[str]:
    """Save the five figures and a summary note into the study for optuna-dashboard.

    The figures (:func:`plot_fitness`, :func:`plot_transfer_graph`,
    :func:`plot_cross_split`, :func:`plot_relations`, :func:`plot_diversity`) are saved with
    ``optuna_dashboard.save_plotly_graph_object`` under the fixed ids of
    :data:`DASHBOARD_FIGURES`, so publishing again replaces them rather than adding
    copies; the dashboard shows them on the study's main page. The study note
    (``optuna_dashboard.save_note``) is replaced by :func:`dashboard_note`.

    Args:
        study: The study.

    Returns:
        The graph object ids saved.

    Raises:
        MissingExtraError: An ``ImportError``, if optuna-dashboard is not installed
            (``pip install "optuna-mto[dashboard]"``).
    """
    optuna_dashboard = require("optuna_dashboard", "publish_to_dashboard")
    ids = []
    for graph_id, plot in DASHBOARD_FIGURES.items():
        figure = plot(study)
        ids.append(
            optuna_dashboard.save_plotly_graph_object(study.study, figure, graph_object_id=graph_id)
        )
    optuna_dashboard.save_note(study.study, dashboard_note(study))
    return ids


class DashboardRefresher:
    """Rate-limited, never-raising :func:`publish_to_dashboard` for use while training.

    Calling it is cheap: within ``min_interval_s`` of the previous publication of the
    same study (in this process) it returns at once without touching the storage.
    A failure (optuna-dashboard missing, a storage error) is logged as a warning and
    the next try waits for the interval like a success. Thread-safe: while one thread
    publishes, calls from other threads return False.

    Args:
        min_interval_s: Least seconds between two publications of one study.
        clock: Monotonic clock (for tests).
    """

    def __init__(
        self, min_interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        check_number("min_interval_s", min_interval_s, 0)
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def __call__(self, study: MTOStudy, *, force: bool = False) -> bool:
        """Publish ``study`` unless it was published less than ``min_interval_s`` ago.

        Args:
            study: The study.
            force: Publish even within the interval (e.g. once the study finished).

        Returns:
            True if the figures were published by this call.
        """
        return self._refresh(study, self.min_interval_s, force)

    def _refresh(self, study: MTOStudy, min_interval_s: float, force: bool) -> bool:
        key = (id(storage_of(study.study)), study_id_of(study.study))
        if not self._lock.acquire(blocking=force):
            return False
        try:
            now = self._clock()
            last = self._last.get(key)
            if not force and last is not None and now - last < min_interval_s:
                return False
            self._last[key] = now
            try:
                publish_to_dashboard(study)
            except Exception as err:  # noqa: BLE001 - must never break training.
                _logger.warning(
                    "Could not publish study %r to optuna-dashboard (next try in %.0f s): %s: %s",
                    study.study_name, min_interval_s, type(err).__name__, err,
                )  # fmt: skip
                return False
            return True
        finally:
            self._lock.release()


_SHARED = DashboardRefresher(0.0)


def refresh_dashboard(
    study: MTOStudy, min_interval_s: float = 30.0, *, force: bool = False
) -> bool:
    """Republish the study's dashboard figures and note, at most every ``min_interval_s``.

    Cheap enough to call after every split or report step: within ``min_interval_s``
    of the previous publication of the same study in this process it returns False
    at once, reading nothing. It never raises; a failure is logged as a warning (and
    retried after the interval). Call it from a worker loop after each split, and
    with ``force=True`` once the study is done, so that an open optuna-dashboard
    shows the figures growing while the study runs::

        study.optimize(trainer)            # or, inside the worker loop, after each split:
        refresh_dashboard(study)           # publishes at most every 30 s
        refresh_dashboard(study, force=True)

    Args:
        study: The study.
        min_interval_s: Least seconds between two publications.
        force: Publish now regardless of the interval (waits for a publication that
            another thread is making).

    Returns:
        True if the figures were published by this call.
    """
    return _SHARED._refresh(study, min_interval_s, force)
