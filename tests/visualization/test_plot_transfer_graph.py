from __future__ import annotations

import math
from collections import Counter

from optuna_mto.visualization import plot_transfer_graph, transfer_counts


def _trace(figure, name):
    (trace,) = [t for t in figure.data if t.name == name]
    return trace


def _expected(study):
    kept, tried = Counter(), Counter()
    for e in study.transfers():
        if not math.isnan(e.after):
            tried[(e.donor, e.receiver)] += 1
            kept[(e.donor, e.receiver)] += int(e.accepted)
    return {pair: (kept[pair], tried[pair]) for pair in tried}


def test_edge_labels_carry_the_counts_of_the_recorded_transfers(finished_study):
    expected = _expected(finished_study)
    assert expected, "the fixture study should have transfers"
    figure = plot_transfer_graph(finished_study)
    labels = _trace(figure, "transfers")
    got = {(int(d), int(r)): (int(k), int(t)) for d, r, k, t, _ in labels.customdata}
    assert got == expected
    assert sorted(labels.text) == sorted(f"{k}/{t}" for k, t in expected.values())
    assert {pair: c[:2] for pair, c in transfer_counts(finished_study).items()} == expected
    # One arrow per (donor, receiver) pair, wider the more attempts it has.
    arrows = [a for a in figure.layout.annotations if a.showarrow]
    assert len(arrows) == len(expected)


def test_nodes_sum_what_each_split_gave_and_received(finished_study):
    figure = plot_transfer_graph(finished_study)
    nodes = _trace(figure, "splits")
    assert list(nodes.text) == ["0", "1", "2"]
    summary = finished_study.summary()
    for split, _, _, kept_in, tried_in in nodes.customdata:
        assert kept_in == summary.accepted_transfers[split]
        assert tried_in == summary.proposed_transfers[split]
    expected = _expected(finished_study)
    for split, kept_out, tried_out, _, _ in nodes.customdata:
        assert kept_out == sum(k for (d, _), (k, _) in expected.items() if d == split)
        assert tried_out == sum(t for (d, _), (_, t) in expected.items() if d == split)
    # The splits sit on the unit circle, split 0 on top.
    assert nodes.y[0] == 1.0
    assert all(math.isclose(math.hypot(x, y), 1.0) for x, y in zip(nodes.x, nodes.y, strict=True))


def test_a_study_without_transfers_draws_only_the_nodes(tmp_path):
    import optuna_mto

    study = optuna_mto.create_study(storage=f"sqlite:///{tmp_path / 'none.db'}", n_splits=4)
    figure = plot_transfer_graph(study)
    assert len(_trace(figure, "transfers").x) == 0
    assert len(_trace(figure, "splits").x) == 4
    assert "none recorded" in figure.layout.title.text
