"""Figures of an optuna-mto study, and their publication into optuna-dashboard.

Like :mod:`optuna.visualization`, each ``plot_*`` function takes a study (here an
:class:`~optuna_mto.MTOStudy`) and returns a :class:`plotly.graph_objects.Figure`:

- :func:`plot_fitness`: each split's reported value per step, with its transfers;
- :func:`plot_transfer_graph`: who gave weights to whom, kept/tried per pair;
- :func:`plot_cross_split`: the K x K cross-split matrix, rows in ranking order;
- :func:`plot_relations`: relation scores recorded by an adaptive transfer strategy;
- :func:`plot_diversity`: distinct weight families per step (population collapse).

:func:`publish_to_dashboard` saves all five and a summary note into the study, where
optuna-dashboard shows them on the study's page; :func:`refresh_dashboard` does the
same at most every N seconds and never raises, for use while the study runs.

Like Optuna's, this package is a leaf: its modules import from the core only the
summary (``optuna_mto._study.summary``), the stored names (``optuna_mto._storage.schema``) and the
logger. The core uses only :func:`refresh_dashboard`, as the publisher
``refresh_dashboard(study, force=...)`` that keeps the dashboard current while a study runs.
"""

from __future__ import annotations

from optuna_mto.visualization._cross_split import plot_cross_split
from optuna_mto.visualization._dashboard import (
    DASHBOARD_FIGURES,
    publish_to_dashboard,
    refresh_dashboard,
)
from optuna_mto.visualization._diversity import plot_diversity, weight_families
from optuna_mto.visualization._fitness import plot_fitness
from optuna_mto.visualization._relations import plot_relations, relation_scores
from optuna_mto.visualization._transfer_graph import plot_transfer_graph, transfer_counts

__all__ = [
    "DASHBOARD_FIGURES",
    "plot_cross_split",
    "plot_diversity",
    "plot_fitness",
    "plot_relations",
    "plot_transfer_graph",
    "publish_to_dashboard",
    "refresh_dashboard",
    "relation_scores",
    "transfer_counts",
    "weight_families",
]
