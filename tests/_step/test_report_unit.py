"""report_step alone: record -> board -> strategy -> ledger, on a real study."""

from __future__ import annotations

import numpy as np
import torch
from _stage_kit import make_env, mlp_with, open_split, same_weights

from optuna_mto._step.events import TransferEvent
from optuna_mto._step.report import report_step
from optuna_mto._storage.schema import (
    CHECKPOINT_FITNESS,
    CHECKPOINT_LINEAGE,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STEP,
    CHECKPOINT_STRATEGY,
)
from optuna_mto.transfer import BaseTransferManager


def _bias_score(model: torch.nn.Module, rows: np.ndarray) -> float:
    return float(model[2].bias[0])


def _intermediate(env, trial) -> dict[int, float]:
    return env.study._storage.get_trial(trial._trial_id).intermediate_values


def test_without_a_transfer_step_the_value_is_recorded_checkpointed_and_published(tmp_path):
    env = make_env(tmp_path, n_samples=60, evaluate=_bias_score)  # NoTransfer
    model = mlp_with(0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    split = open_split(env, 1, model, opt)
    result = report_step(env.shared, split.handle, split.ledger, split.trial, 0.61, 3)

    assert (result.step, result.fitness, result.transfer) == (3, 0.61, None)
    assert _intermediate(env, split.trial) == {3: 0.61}
    saved = env.store.load(result.checkpoint)
    assert same_weights(saved[CHECKPOINT_MODEL], model.state_dict())
    assert saved[CHECKPOINT_OPTIMIZER]["param_groups"][0]["momentum"] == 0.9
    assert (saved[CHECKPOINT_STEP], saved[CHECKPOINT_FITNESS], saved[CHECKPOINT_LINEAGE]) == (
        3, 0.61, [1],
    )  # fmt: skip
    assert CHECKPOINT_STRATEGY not in saved  # no strategy state to keep
    record = env.board.read()[1]
    assert (record.step, record.fitness, record.checkpoint) == (3, 0.61, result.checkpoint)
    assert split.ledger.best == (0.61, 3, result.checkpoint)


def test_without_a_model_only_the_value_is_recorded(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    split = open_split(env, 0)
    result = report_step(env.shared, split.handle, split.ledger, split.trial, 0.4, 0,
                         with_model=False)  # fmt: skip
    assert (result.step, result.fitness, result.transfer, result.checkpoint) == (0, 0.4, None, None)
    assert _intermediate(env, split.trial) == {0: 0.4}
    assert env.board.read() == {} and split.ledger.latest is None


class _Recording(BaseTransferManager):
    """Takes the best donor's weights (judged on the own rows); keeps the context it got."""

    def __init__(self) -> None:
        super().__init__(interval=2, warmup=2)
        self.contexts = []

    def on_report(self, context, handle):
        self.contexts.append(context)
        handle.state["seen"] = sorted(context.others)
        donor = max(context.others, key=context.others.get)
        state = handle.load_donor(context.records[donor])
        handle.apply(state)
        handle.inherit(context.records[donor].lineage)
        after = handle.evaluate()
        return handle.record(
            TransferEvent(
                context.step,
                handle.split,
                donor,
                0,
                context.records[donor].step,
                "replace",
                context.fitness,
                after,
                True,
            )  # fmt: skip
        )


def test_at_a_transfer_step_the_strategy_sees_the_board_and_its_outcome_is_checkpointed(
    tmp_path,
):
    manager = _Recording()
    env = make_env(tmp_path, n_samples=60, manager=manager, evaluate=_bias_score, n_splits=4)
    for k, (bias, pruned) in {1: (0.9, False), 2: (0.3, False), 3: (0.99, True)}.items():
        donor = open_split(env, k, mlp_with(bias, seed=k))
        report_step(env.shared, donor.handle, donor.ledger, donor.trial, bias, 1)
        if pruned:  # a pruned split is no donor
            donor.ledger.publish(1, bias, [k], (0, 0), finished=True, pruned=True)
    split = open_split(env, 0, mlp_with(0.1))

    off = report_step(env.shared, split.handle, split.ledger, split.trial, 0.1, 1)  # not a step
    assert off.transfer is None and manager.contexts == []
    result = report_step(env.shared, split.handle, split.ledger, split.trial, 0.1, 2)

    (context,) = manager.contexts
    assert (context.receiver, context.step, context.fitness) == (0, 2, 0.1)
    assert context.others == {1: 0.9, 2: 0.3}  # not itself, not the pruned split 3
    assert set(context.records) == {1, 2}
    expected_rng = np.random.default_rng([env.shared.seed, 0, 2])
    assert context.rng.random() == expected_rng.random()
    assert result.transfer is not None and result.transfer.donor == 1
    assert result.fitness == float(torch.tensor(0.9))  # the kept weights' score (float32)
    saved = env.store.load(result.checkpoint)
    assert same_weights(saved[CHECKPOINT_MODEL], mlp_with(0.9, seed=1).state_dict())
    assert saved[CHECKPOINT_LINEAGE] == [0, 1]
    assert saved[CHECKPOINT_STRATEGY] == {"seen": [1, 2]}
    record = env.board.read()[0]
    assert (record.fitness, record.lineage, record.tried, record.accepted) == (
        result.fitness, [0, 1], 1, 1,
    )  # fmt: skip
    attrs = env.study._storage.get_trial(split.trial._trial_id).user_attrs
    assert attrs["transfer:000002"]["donor"] == 1 and attrs["transfer:000002"]["accepted"]
