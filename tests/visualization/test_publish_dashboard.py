from __future__ import annotations

import json
import logging

import pytest
from _models import digits_trainer

import optuna_mto
from optuna_mto.visualization import (
    DASHBOARD_FIGURES,
    plot_cross_split,
    publish_to_dashboard,
    refresh_dashboard,
)
from optuna_mto.visualization._dashboard import DashboardRefresher, dashboard_note

optuna_dashboard = pytest.importorskip("optuna_dashboard")
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects  # noqa: E402


def _graph_objects(study) -> dict[str, dict]:
    attrs = study.study._storage.get_study_system_attrs(study.study._study_id)
    return {k: json.loads(v) for k, v in get_plotly_graph_objects(attrs).items()}


@pytest.fixture
def small_study(storage_url, study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=2)
    study.optimize(digits_trainer(x, y, epochs=2))
    return study


def test_publishing_twice_replaces_the_figures_and_the_note(small_study):
    ids = publish_to_dashboard(small_study)
    assert ids == list(DASHBOARD_FIGURES)
    first = _graph_objects(small_study)
    publish_to_dashboard(small_study)
    again = _graph_objects(small_study)
    assert sorted(again) == sorted(DASHBOARD_FIGURES) and len(again) == 5
    assert again.keys() == first.keys()
    # What the dashboard serves is the figure itself.
    heatmap = again["mto-cross-split"]["data"][0]
    assert heatmap["y"] == list(plot_cross_split(small_study).data[0].y)

    note = optuna_dashboard.get_note(small_study.study)
    summary = small_study.summary()
    assert f"## optuna-mto study `{small_study.study_name}`" in note
    assert "| splits (K) | 2 |" in note
    assert "| splitter | random |" in note
    assert "RescueTransfer(" in note  # the default strategy
    best = summary.best_split
    row = f"| **1** | {best} | {summary.trial_numbers[best]} | "
    assert row in note
    assert f"{summary.mean[best]:.4f}" in note
    assert note.count("\n| **1** |") == 1


def test_the_note_shows_the_summary_table(small_study):
    """The note is the summary's own table in Markdown: same columns, rows and legend."""
    note = dashboard_note(small_study)
    head, rows = small_study.summary().table()
    assert "seen" in head and "state" in head  # the columns the note once left out
    lines = note.splitlines()
    start = lines.index("| " + " | ".join(head) + " |")
    assert lines[start + 1] == "| " + " | ".join(["---"] * len(head)) + " |"
    shown = [line.strip("| ").split(" | ") for line in lines[start + 2 : start + 2 + len(rows)]]
    assert [[c.strip("*") for c in cells] for cells in shown] == rows
    for line in small_study.summary().legend():
        assert f"- {line}" in lines


def test_refresh_is_rate_limited_and_never_raises(tmp_path, monkeypatch, caplog):
    # A study with no trial yet: the figures say so, and publishing works all the same.
    small_study = optuna_mto.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", n_splits=2)
    now = [100.0]
    refresher = DashboardRefresher(min_interval_s=30, clock=lambda: now[0])
    assert refresher(small_study) is True
    assert refresher(small_study) is False  # within 30 s: nothing read or written
    now[0] += 31
    assert refresher(small_study) is True
    assert refresher(small_study, force=True) is True

    def broken(study):
        raise RuntimeError("database is gone")

    monkeypatch.setattr("optuna_mto.visualization._dashboard.publish_to_dashboard", broken)
    now[0] += 31
    with caplog.at_level(logging.WARNING):
        assert refresher(small_study) is False
    assert "database is gone" in caplog.text
    assert refresher(small_study) is False  # a failure also waits for the interval
    assert len(_graph_objects(small_study)) == 5

    with caplog.at_level(logging.WARNING):
        assert refresh_dashboard(small_study, min_interval_s=0) is False
    monkeypatch.undo()
    assert refresh_dashboard(small_study, min_interval_s=0) is True
    assert refresh_dashboard(small_study, min_interval_s=3600) is False


def test_refresher_rejects_a_negative_interval():
    with pytest.raises(ValueError, match="min_interval_s"):
        DashboardRefresher(min_interval_s=-1)
