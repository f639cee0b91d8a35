from __future__ import annotations

import math

import pytest

from optuna_mto.visualization import plot_fitness
from optuna_mto.visualization._common import split_trials


@pytest.mark.smoke
def _trace(figure, name):
    matches = [t for t in figure.data if t.name == name]
    assert len(matches) == 1, [t.name for t in figure.data]
    return matches[0]


def test_one_line_per_split_holds_its_intermediate_values(finished_study):
    figure = plot_fitness(finished_study)
    trials = finished_study.study.get_trials()
    assert len(trials) == finished_study.n_splits
    for trial in trials:
        line = _trace(figure, f"split {trial.params['split']}")
        steps = sorted(trial.intermediate_values)
        assert steps == [0, 1, 2]
        assert list(line.x) == steps
        assert list(line.y) == [trial.intermediate_values[s] for s in steps]
    assert "maximize" in figure.layout.title.text


def test_transfer_markers_match_the_recorded_events(finished_study):
    figure = plot_fitness(finished_study)
    events = finished_study.transfers()
    kept = [e for e in events if e.accepted]
    rejected = [e for e in events if not e.accepted]
    assert kept, "the fixture study should have kept transfers"
    by_point = {
        "transfer kept": sorted((e.step, e.receiver, e.donor, e.after) for e in kept),
        "transfer rejected": sorted((e.step, e.receiver, e.donor, e.before) for e in rejected),
    }
    for name, expected in by_point.items():
        trace = _trace(figure, name)
        points = zip(trace.x, trace.y, trace.customdata, strict=True)
        got = sorted((x, int(c[0]), int(c[1]), y) for x, y, c in points)
        assert got == expected
        for c, text in zip(trace.customdata, trace.hovertext, strict=True):
            assert f"split {int(c[0])} ← split {int(c[1])}" in text
    # A kept transfer sits at the score its receiver continued from; a rejected one on
    # the receiver's own line, at the value it reported.
    values = {t.params["split"]: t.intermediate_values for t in finished_study.study.get_trials()}
    for e in rejected:
        assert values[e.receiver][e.step] == pytest.approx(e.before)
    for e in kept:
        assert values[e.receiver][e.step] == pytest.approx(e.before)
        assert not math.isnan(e.after)


def test_markers_are_in_the_receivers_colour(finished_study):
    figure = plot_fitness(finished_study)
    colours = {
        int(t.name.split()[1]): t.line.color for t in figure.data if t.mode == "lines+markers"
    }
    trace = _trace(figure, "transfer kept")
    assert [colours[int(c[0])] for c in trace.customdata] == list(trace.marker.color)


def test_a_study_without_reports_gives_an_empty_figure(tmp_path):
    import optuna_mto

    study = optuna_mto.create_study(storage=f"sqlite:///{tmp_path / 'empty.db'}", n_splits=2)
    assert split_trials(study) == {}
    figure = plot_fitness(study)
    assert len(figure.data) == 0
    assert figure.layout.annotations[0].text == "no split has reported yet"
