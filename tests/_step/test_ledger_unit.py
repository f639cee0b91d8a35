"""CheckpointLedger alone: keep latest/previous/best, remove the rest, publish a record."""

from __future__ import annotations

import pytest
import torch
from _stage_kit import make_env, open_split

from optuna_mto._errors import CheckpointError

FITNESS = [0.5, 0.9, 0.6, 0.7, 0.95, 0.1, 0.2, 0.3]


def _exists(store, ref) -> bool:
    try:
        store.load(ref)
    except CheckpointError:
        return False
    return True


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step}


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_save_keeps_latest_previous_and_best_and_removes_the_rest(tmp_path, direction):
    env = make_env(tmp_path, n_samples=30, direction=direction)
    ledger = open_split(env, 1).ledger
    pick = max if direction == "maximize" else min
    refs = []
    for step, fitness in enumerate(FITNESS):
        refs.append(ledger.save(_state(step), step, fitness, lineage=[1, step % 3]))
        best = FITNESS.index(pick(FITNESS[: step + 1]))  # first index: ties keep the earlier
        assert ledger.latest == refs[step]
        assert ledger.previous == (refs[step - 1] if step else None)
        assert ledger.best == (FITNESS[best], best, refs[best])
        assert ledger.best_lineage == [1, best % 3]
        kept = {refs[step], refs[best]} | ({refs[step - 1]} if step else set())
        for i, ref in enumerate(refs):
            assert _exists(env.store, ref) == (ref in kept), (step, i)
    loaded = env.store.load(ledger.best[2])
    assert loaded["step"] == ledger.best[1]
    assert torch.equal(loaded["model"]["w"], torch.full((3,), float(ledger.best[1])))


def test_publish_writes_the_record_the_board_reads_back(tmp_path):
    env = make_env(tmp_path, n_samples=30)
    split = open_split(env, 2)
    ledger = split.ledger
    ledger.total_steps, ledger.arch = 9, "sig"
    r0 = ledger.save(_state(0), 0, 0.8, [2])
    r1 = ledger.save(_state(1), 1, 0.4, [0, 2])
    ledger.publish(1, 0.4, [0, 2], (3, 1))

    record = env.board.read()[2]
    assert (record.split, record.trial_id, record.trial_number) == (
        2, split.trial._trial_id, split.trial.number,
    )  # fmt: skip
    assert (record.step, record.fitness, record.finished, record.pruned) == (1, 0.4, False, False)
    assert (record.checkpoint, record.previous_checkpoint) == (r1, r0)
    assert (record.best_fitness, record.best_step, record.best_checkpoint) == (0.8, 0, r0)
    assert (record.lineage, record.best_lineage) == ([0, 2], [2])
    assert (record.tried, record.accepted, record.total_steps, record.arch) == (3, 1, 9, "sig")

    ledger.publish(1, 0.4, [0, 2], (3, 1), finished=True)  # a finished split offers its best
    record = env.board.read()[2]
    assert record.finished and not record.pruned
    assert (record.step, record.fitness, record.checkpoint) == (0, 0.8, r0)
    assert record.previous_checkpoint is None
    assert set(env.board.read()) == {2}  # one row per split, replaced


def test_keep_only_and_resumed(tmp_path):
    env = make_env(tmp_path, n_samples=30)
    ledger = open_split(env, 0).ledger
    r0 = ledger.save(_state(0), 0, 0.9, [0])
    r1 = ledger.save(_state(1), 1, 0.1, [0])
    r2 = ledger.save(_state(2), 2, 0.2, [0])
    assert [_exists(env.store, r) for r in (r0, r1, r2)] == [True, True, True]
    ledger.keep_only(r0)
    assert [_exists(env.store, r) for r in (r0, r1, r2)] == [True, False, False]

    other = open_split(env, 0).ledger  # a retry takes over r0 as latest and best
    other.resumed(r0, (0.9, 0, r0), [0, 1], step=4, fitness=0.9)
    assert (other.latest, other.best, other.best_lineage) == (r0, (0.9, 0, r0), [0, 1])
    assert (other.first_step, other.resumed_at) == (5, (4, 0.9))
