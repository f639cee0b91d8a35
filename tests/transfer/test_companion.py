"""A strategy with a companion model, written here alone: nothing outside this file knows it.

``ShadowTransfer`` is a toy explorer. At each transfer step it starts a *shadow*: a copy
of the split's model with a faster optimizer of its own, kept as the companion
``"shadow"`` with ``train=True``. The objective trains it between reports (the
``SupervisedTrainer``, or ``trial.train_companions`` in an objective of one's own), and
at the next transfer step the shadow's weights replace the split's when they score
better on its validation rows.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from _models import digits_trainer

import optuna_mto
from optuna_mto import TransferEvent
from optuna_mto._study.frameworks import refuse_untrainable_companions
from optuna_mto.transfer import (
    BaseTransferManager,
    Companion,
    SplitHandle,
    TransferContext,
    train_companions,
)

EPOCHS = 4


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


@dataclasses.dataclass
class Shadow(Companion):
    """The companion, with what the strategy needs to judge it later."""

    started: int = -1
    start_weights: torch.Tensor | None = None


class ShadowTransfer(BaseTransferManager):
    """Judge the shadow trained since the last transfer step, then start the next one."""

    def __init__(self, lr: float = 3e-2) -> None:
        super().__init__()
        self.lr = lr
        #: One row per judged shadow: split, step, trained?, accepted?, copied exactly?
        self.judged: list[tuple[int, int, bool, bool, bool]] = []

    @property
    def has_trainable_companions(self) -> bool:
        return True

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        event = self._judge(context, handle)
        assert handle.model is not None
        model = copy.deepcopy(handle.model)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        handle.companions["shadow"] = Shadow(model, optimizer, started=context.step,
                                             start_weights=_flat(model))  # fmt: skip
        return event

    def _judge(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        shadow = handle.companions.pop("shadow", None)
        if shadow is None:
            return None
        assert handle.model is not None
        trained = not torch.equal(_flat(shadow.model), shadow.start_weights)
        score = handle.evaluate(shadow.model)
        accepted = self.accept(context.fitness, score, context.direction)
        if accepted:
            handle.apply({**handle.capture(), "model": shadow.model.state_dict()})
        copied = torch.equal(_flat(handle.model), _flat(shadow.model))
        self.judged.append((handle.split, context.step, trained, accepted, copied))
        return handle.record(
            TransferEvent(context.step, handle.split, handle.split, handle.trial_number,
                          shadow.started, "shadow", context.fitness, score, accepted)
        )  # fmt: skip

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "lr": self.lr}


def _slow_adam(params) -> torch.optim.Optimizer:
    """The split's own optimizer: slow, so that a fast shadow can win."""
    return torch.optim.Adam(params, lr=1e-4)


def _check(study: optuna_mto.MTOStudy, strategy: ShadowTransfer) -> None:
    # A shadow is made at each step from 1 and judged at the next: steps 2 .. EPOCHS-1.
    assert sorted((s, t) for s, t, *_ in strategy.judged) == [
        (split, step) for split in range(2) for step in range(2, EPOCHS)
    ]
    assert all(trained for _, _, trained, _, _ in strategy.judged)  # weights changed
    assert any(accepted for _, _, _, accepted, _ in strategy.judged)  # and used
    assert all(copied == accepted for _, _, _, accepted, copied in strategy.judged)
    events = study.transfers()
    assert {e.operator for e in events} == {"shadow"}
    assert [e.accepted for e in sorted(events, key=lambda e: (e.receiver, e.step))] == [
        accepted for *_, accepted, _ in sorted(strategy.judged)
    ]
    assert study.summary().complete


def _study(tmp_path, strategy: ShadowTransfer) -> optuna_mto.MTOStudy:
    return optuna_mto.create_study(
        storage=f"sqlite:///{tmp_path / 'companion.db'}", study_name="shadow", n_splits=2,
        transfer=strategy, heartbeat_interval=None,
    )  # fmt: skip


def test_the_trainer_trains_a_strategys_companion_and_the_strategy_uses_it(tmp_path, digits):
    strategy = ShadowTransfer()
    study = _study(tmp_path, strategy)
    x, y = digits
    study.optimize(digits_trainer(x, y, epochs=EPOCHS, optimizer_fn=_slow_adam),
                   executor="thread", dashboard=False)  # fmt: skip
    _check(study, strategy)
    for trial in study.study.get_trials():  # shadows made at steps 1 and 2 trained once each
        assert trial.user_attrs["explorer_epochs"] == 2
        assert trial.user_attrs["train_epochs"] == EPOCHS


def test_the_objective_api_trains_companions_with_train_companions(tmp_path, digits):
    strategy = ShadowTransfer()
    study = _study(tmp_path, strategy)
    x, y = digits
    trainer = digits_trainer(x, y)
    seen: list[tuple[int, int, list[str], bool]] = []

    def objective(trial: optuna_mto.SplitTrial) -> None:
        model = trainer.build_model(trial.split)
        optimizer = _slow_adam(model.parameters())
        for step in range(EPOCHS):
            generator = torch.Generator().manual_seed(step)
            trainer.train_epoch(model, optimizer, trial.train_indices, generator)
            trained = trial.train_companions(
                lambda m, o, g: trainer.train_epoch(m, o, trial.train_indices, g), generator
            )
            seen.append((trial.split, step, sorted(trial.companions), trial.explorer is None))
            assert trained == len(trial.companions)
            trial.report(trial.evaluate(model), step, model=model, optimizer=optimizer)
        assert isinstance(trial.companions["shadow"], Shadow)  # the last one, never trained

    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate, dashboard=False)
    _check(study, strategy)
    assert seen == [(s, t, ["shadow"] if t >= 2 else [], True)
                    for s in range(2) for t in range(EPOCHS)]  # fmt: skip


def test_companions_train_in_name_order_with_seeded_generators_unless_frozen() -> None:
    calls: list[tuple[str, int]] = []
    teacher = Companion(torch.nn.Linear(2, 2), train=False)
    second = Companion(torch.nn.Linear(2, 2), "opt-b")
    first = Companion(torch.nn.Linear(2, 2), "opt-a")
    companions = {"teacher": teacher, "b": second, "a": first}

    def train(model, optimizer, generator=None):
        calls.append((optimizer, None if generator is None else generator.initial_seed()))

    assert train_companions(companions, train, torch.Generator().manual_seed(10)) == 2
    assert calls == [("opt-a", 11), ("opt-b", 12)]
    calls.clear()
    assert train_companions(companions, train) == 2 and calls == [("opt-a", None), ("opt-b", None)]
    assert train_companions({}, train) == 0


def test_a_framework_callback_refuses_a_strategy_whose_companions_need_training() -> None:
    class FrameworkCallback:
        trains_companions = False

    def objective(trial: Any) -> None:
        FrameworkCallback()

    with pytest.raises(ValueError, match="FrameworkCallback cannot train the companion models"):
        refuse_untrainable_companions(objective, ShadowTransfer())
    refuse_untrainable_companions(objective, optuna_mto.transfer.GreedyTransfer())


def test_every_hook_has_a_declared_default() -> None:
    manager = BaseTransferManager()
    context = TransferContext(0, 1, 0.5, "maximize", {1: 0.9}, np.random.default_rng(0))
    assert manager.choose_donor(context) is None  # never transfers
    assert manager.relations({"relations": {"1": 0.5}}) == {}
    assert manager.explore_hparams({"lr": 0.1}, {}, context) == ({"lr": 0.1}, {})
    assert manager.explore({"param_groups": []}, context) == ({"param_groups": []}, {})
    assert not manager.has_trainable_companions and not manager.uses_explorer
    assert list(manager.candidates({}, {"model": 1}, context)) == [("copy", {"model": 1})]
