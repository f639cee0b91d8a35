from __future__ import annotations

import pytest
import torch

from optuna_mto._study.soup import average_states, greedy_soup, shared_ancestry


def test_average_states_means_floats_keeps_integers_and_checks_shapes():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].item() == 5
    with pytest.raises(ValueError, match="no tensor 'w' of shape \\(2,\\)"):
        average_states([a, {"w": torch.zeros(3), "n": torch.tensor(1)}])
    with pytest.raises(ValueError, match="zero state_dicts"):
        average_states([])


def test_shared_ancestry_needs_a_split_common_to_every_lineage():
    assert shared_ancestry({0: [0, 2], 1: [1, 2], 2: [2]})
    assert not shared_ancestry({0: [0], 1: [1]})
    assert not shared_ancestry({0: [0, 1], 1: [1, 2], 2: [2, 0]})  # pairwise, not common


def test_greedy_soup_adds_a_member_only_when_the_score_improves():
    target = torch.tensor([1.0])
    states = [{"w": torch.tensor([1.2])}, {"w": torch.tensor([0.8])}, {"w": torch.tensor([5.0])}]

    def score(state):  # closer to the target is better
        return -float((state["w"] - target).abs())

    kept, soup_score = greedy_soup(states, score, "maximize")
    assert kept == [0, 1]  # averaging 1.2 and 0.8 hits 1.0; adding 5.0 would hurt
    assert soup_score == pytest.approx(0.0)
