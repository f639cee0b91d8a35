"""A strategy written here, with its own per-step state, needs no edit of the package.

``RoundRobinAverage`` keeps a turn counter and a history in ``handle.state``: at each
transfer step it averages its weights with the next donor in turn and keeps the
average only if it scores better on its own validation rows. The state is saved in
every checkpoint, so a split resumed after an interruption continues the rotation.
"""

from __future__ import annotations

from typing import Any

from _models import _digits, adam_fast, tiny_mlp

import optuna_mto
from optuna_mto import TransferEvent
from optuna_mto.transfer import BaseTransferManager, SplitHandle, TransferContext


class RoundRobinAverage(BaseTransferManager):
    """Average with the other splits in turn (a test strategy with per-split state)."""

    def on_report(self, context: TransferContext, handle: SplitHandle) -> TransferEvent | None:
        turn = handle.state.get("turn", 0)
        handle.state["turn"] = turn + 1
        others = [k for k in range(handle.n_splits) if k != handle.split]
        donor = others[turn % len(others)]
        record = context.records.get(donor)
        if record is None:
            handle.state.setdefault("history", []).append([context.step, donor, "absent"])
            return None
        donor_state = handle.load_donor(record)
        if isinstance(donor_state, str):
            return None
        own = handle.capture()
        average = {k: (v + donor_state["model"][k]) / 2 if v.is_floating_point() else v
                   for k, v in own["model"].items()}  # fmt: skip
        handle.apply({**own, "model": average})
        after = handle.evaluate()
        accepted = self.accept(context.fitness, after, context.direction)
        if accepted:
            handle.inherit(record.lineage or [donor])
        else:
            handle.apply(own)
        handle.state.setdefault("history", []).append([context.step, donor, accepted])
        return handle.record(
            TransferEvent(
                context.step,
                handle.split,
                donor,
                record.trial_number,
                record.step,
                "average",
                context.fitness,
                after,
                accepted,
            )  # fmt: skip
        )


class _StopSplit2AfterStep1:
    def __call__(self, study: Any, trial: Any) -> None:
        pass

    def on_report(self, trial: Any, result: Any) -> None:
        if trial.split == 2 and result.step == 1:
            raise KeyboardInterrupt


def test_a_custom_strategy_keeps_its_own_state_across_a_resume(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'custom.db'}"
    strategy = RoundRobinAverage()
    study = optuna_mto.create_study(
        study_name="round-robin", storage=storage, n_splits=3, transfer=strategy
    )
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, _digits(), optimizer_fn=adam_fast, epochs=5, batch_size=64, seed=0
    )
    try:
        study.optimize(trainer, dashboard=False, callbacks=[_StopSplit2AfterStep1()])
    except KeyboardInterrupt:
        pass
    # A custom class is rebuilt from the instance the user passes (as for any custom manager).
    study = optuna_mto.load_study(study_name="round-robin", storage=storage, transfer=strategy)
    study.optimize(trainer, dashboard=False)
    assert study.summary().complete

    events = [e for e in study.transfers() if e.receiver == 2]
    # Donors in turn: 0, 1, 0, 1. Resumed after step 1 with turn=1 restored from the
    # checkpoint; a lost state would have restarted the rotation at donor 0 for step 2.
    assert [(e.step, e.donor) for e in events] == [(1, 0), (2, 1), (3, 0), (4, 1)]
    resumed = [t for t in study.study.get_trials() if t.params["split"] == 2][-1]
    assert resumed.user_attrs["resumed_from_step"] == 1

    # The state is in the split's kept checkpoint, as plain values.
    record = study.records()[2]
    state = study.checkpoint_store.load(record.best_checkpoint, map_location="cpu")
    state = state.get("strategy", {})
    assert state.get("turn", 0) == record.best_step  # one turn per transfer step 1..step
    expected = [[1, 0], [2, 1], [3, 0], [4, 1]][: record.best_step]
    assert [h[:2] for h in state.get("history", [])] == expected
    # Split 0 ran first, alone: its turns went by with no donor present, nothing tried.
    assert study.records()[0].tried == 0
