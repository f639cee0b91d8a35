from __future__ import annotations

import numpy as np

from optuna_mto.visualization import plot_cross_split


def test_heatmap_is_the_matrix_in_ranking_order(finished_study):
    summary = finished_study.summary()
    assert summary.complete
    figure = plot_cross_split(finished_study)
    (heatmap,) = figure.data
    assert heatmap.type == "heatmap"
    np.testing.assert_array_equal(np.asarray(heatmap.z), summary.matrix[summary.ranking])
    assert list(heatmap.x) == ["val 0", "val 1", "val 2"]
    expected_rows = [
        f"#{rank} split {split} (mean {summary.mean[split]:.4f})"
        for rank, split in enumerate(summary.ranking, start=1)
    ]
    assert list(heatmap.y) == expected_rows
    # Every cell is annotated with its value; the best row is drawn on top.
    for row, split in zip(heatmap.text, summary.ranking, strict=True):
        assert list(row) == [f"{v:.4f}" for v in summary.matrix[split]]
    assert heatmap.texttemplate == "%{text}"
    assert figure.layout.yaxis.autorange == "reversed"
    assert f"split {summary.best_split}" in figure.layout.title.text


def test_unfinished_splits_come_last_with_empty_cells(tmp_path, digits):
    from _models import digits_trainer

    import optuna_mto

    x, y = digits
    study = optuna_mto.create_study(storage=f"sqlite:///{tmp_path / 'half.db'}", n_splits=3)
    study.optimize(digits_trainer(x, y, epochs=1), timeout=0)  # one split, then stop
    summary = study.summary()
    assert len(summary.ranking) == 1
    (heatmap,) = plot_cross_split(study).data
    assert heatmap.y[0].startswith("#1 split ")
    assert [label.endswith("(not finished)") for label in heatmap.y] == [False, True, True]
    assert np.isnan(np.asarray(heatmap.z[1:], dtype=float)).all()
    assert list(heatmap.text[1]) == ["", "", ""]
