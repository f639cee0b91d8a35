from __future__ import annotations

import pytest
from _models import digits_trainer

import optuna_mto
from optuna_mto.visualization import plot_relations, relation_scores
from optuna_mto.visualization._relations import NO_RELATIONS_MESSAGE


def _score(receiver: int, donor: int, step: int) -> float:
    return round(0.1 * receiver + 0.01 * donor + 0.001 * step, 6)


@pytest.fixture(scope="module")
def related_study(tmp_path_factory, digits):
    """A real study whose trials record relation scores, as an adaptive strategy would."""
    root = tmp_path_factory.mktemp("relations")
    x, y = digits
    trainer = digits_trainer(x, y, epochs=2)

    def objective(trial: optuna_mto.SplitTrial) -> None:
        trainer(trial)
        others = [d for d in range(trial.n_splits) if d != trial.split]
        for step in (1, 0):  # written out of order; read back in step order
            scores = {str(d): _score(trial.split, d, step) for d in others}
            trial.set_user_attr(f"relations:{step:06d}", {"step": step, "scores": scores})
        trial.set_user_attr("relations:bad", "not a relation record")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTUNA_MTO_HOME", str(root / "home"))
        study = optuna_mto.create_study(storage=f"sqlite:///{root / 'study.db'}", n_splits=3)
        study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    return study


def test_one_line_per_receiver_and_donor_with_the_recorded_scores(related_study):
    figure = plot_relations(related_study)
    lines = {(t.meta["receiver"], t.meta["donor"]): t for t in figure.data}
    expected_pairs = {(r, d) for r in range(3) for d in range(3) if r != d}
    assert set(lines) == expected_pairs
    for (receiver, donor), trace in lines.items():
        assert list(trace.x) == [0, 1]
        assert list(trace.y) == [_score(receiver, donor, 0), _score(receiver, donor, 1)]
        assert trace.name == f"split {donor}"
    # One row per receiver; the donor's legend entry shows once.
    assert [a.text for a in figure.layout.annotations] == [f"split {r} receives" for r in range(3)]
    shown = [t.name for t in figure.data if t.showlegend is not False]
    assert sorted(shown) == ["split 0", "split 1", "split 2"]


def test_relation_scores_reads_only_well_formed_records(related_study):
    relations = relation_scores(related_study)
    assert relations[0] == {1: [(0, 0.01), (1, 0.011)], 2: [(0, 0.02), (1, 0.021)]}


def test_without_relation_scores_the_figure_says_so(finished_study):
    assert relation_scores(finished_study) == {}
    figure = plot_relations(finished_study)
    assert len(figure.data) == 0
    assert [a.text for a in figure.layout.annotations] == [NO_RELATIONS_MESSAGE]
    assert NO_RELATIONS_MESSAGE == "no relation scores recorded (adaptive transfer not used)"
