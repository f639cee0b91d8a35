from __future__ import annotations

from optuna_mto import TransferEvent
from optuna_mto.visualization import plot_diversity, weight_families


def _kept(step, receiver, donor, donor_step, accepted=True):
    return TransferEvent(step, receiver, donor, donor, donor_step, "copy", 0.5, 0.6, accepted)


def test_weight_families_follow_kept_copies_through_the_donors_history():
    events = [
        _kept(1, 0, 1, 1),  # 0 takes 1's weights: families {1, 2, 3}
        _kept(2, 2, 0, 0),  # 2 takes 0's weights of step 0, before 0 copied: still family 0
        _kept(2, 3, 1, 1, accepted=False),  # rejected: no change
        _kept(3, 3, 0, 2),  # 3 takes 0's weights of step 2: family 1
    ]
    assert weight_families(events, 4, [0, 1, 2, 3]) == [4, 3, 3, 2]
    assert weight_families([], 3, [0, 5]) == [3, 3]


def test_plot_diversity_of_a_real_study(finished_study):
    figure = plot_diversity(finished_study)
    (trace,) = figure.data
    assert trace.name == "weight families"
    steps = list(trace.x)
    assert steps == [0, 1, 2]
    expected = weight_families(finished_study.transfers(), 3, steps)
    assert list(trace.y) == expected and expected[0] == 3
    kept = [e for e in finished_study.transfers() if e.accepted]
    assert (min(expected) < 3) == bool(kept)  # the first kept copy merges two families
