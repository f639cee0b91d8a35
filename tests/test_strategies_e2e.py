"""Transfer strategies end to end on real digits: AMTO, PBT, synchronous mode, selection set."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from _models import digits_trainer
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import optuna_mto
from optuna_mto.transfer import AdaptiveTransfer, GreedyTransfer, PBTTransfer


@pytest.mark.smoke
def test_amto_learns_which_donor_helps(study_name, digits):
    x, y = digits
    trainer = digits_trainer(x, y)
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=3, transfer=AdaptiveTransfer(temperature=5.0)
    )
    final = {}

    def objective(trial):
        model = trainer.build_model(trial.split)
        lr = {0: 1e-2, 1: 0.0, 2: 1e-3}[trial.split]  # 0 learns, 1 never does, 2 slowly
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(10):
            gen = torch.Generator().manual_seed(step)
            trainer.train_epoch(model, opt, trial.train_indices, gen)
            if trial.explorer is not None:
                trainer.train_epoch(trial.explorer.model, trial.explorer.optimizer,
                                    trial.train_indices, gen)  # fmt: skip
            # Split 1 claims a perfect score, so no explorer ever replaces its weights.
            value = 1.0 if trial.split == 1 else trial.evaluate(model)
            trial.report(value, step, model=model, optimizer=opt)
        final[trial.split] = trial.relations

    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)

    events = [e for e in study.transfers() if e.receiver == 2]
    assert {e.operator for e in events} == {"explorer"}
    assert {e.donor for e in events} == {0, 1}  # both sources were explored
    assert all(e.accepted == (e.after > e.before) for e in events)
    assert any(e.accepted for e in events if e.donor == 0)
    assert not any(e.accepted for e in events if e.donor == 1)
    assert final[2][0] > 0 > final[2][1]  # split 2 learned that split 0 helps, 1 hurts
    trial = next(t for t in study.study.get_trials() if t.params["split"] == 2)
    recorded = [v for k, v in sorted(trial.user_attrs.items()) if k.startswith("relations:")]
    assert len(recorded) == len(events)
    assert recorded[-1]["scores"] == {str(k): round(v, 6) for k, v in final[2].items()}
    assert sorted(trial.system_attrs["mto:lineage"]) == [0, 2]  # inherited split 0's weights


def test_amto_with_the_trainer_counts_explorer_compute(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=AdaptiveTransfer(interval=2, warmup=1)
    )
    study.optimize(digits_trainer(x, y, epochs=5))
    trials = {t.params["split"]: t for t in study.study.get_trials()}
    assert trials[0].user_attrs["explorer_epochs"] == 0  # nothing published yet
    # Explorers made at steps 1 and 3 train through epochs 2-3 and 4 (3 extra epochs).
    assert trials[1].user_attrs["explorer_epochs"] == 3
    assert trials[1].user_attrs["train_epochs"] == 5
    assert study.summary().complete


@pytest.mark.smoke
def test_pbt_explores_hyperparameters_inside_their_range(study_name, digits):
    x, y = digits
    trainer = digits_trainer(x, y)
    space = {"lr": FloatDistribution(1e-3, 0.2, log=True)}
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=PBTTransfer(hyperparams=space)
    )
    seen_lr = []

    def objective(trial):
        model = trainer.build_model(trial.split)
        opt = torch.optim.SGD(model.parameters(), lr=0.05 if trial.split == 0 else 1e-3)
        for step in range(4):
            trainer.train_epoch(model, opt, trial.train_indices, torch.Generator().manual_seed(1))
            result = trial.report(trial.evaluate(model), step, model=model, optimizer=opt)
            if result.accepted:
                seen_lr.append((result.transfer.hparams["lr"], opt.param_groups[0]["lr"]))

    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    assert seen_lr, "no transfer was accepted"
    for (old, new), applied in seen_lr:
        assert new == applied and 1e-3 <= new <= 0.2 and new != old
    events = [e for e in study.transfers() if e.accepted]
    assert [e.hparams["lr"] for e in events] == [pair for pair, _ in seen_lr]


class _CrashAtStep1:
    def __init__(self, trainer):
        self.trainer = trainer
        self.dataset, self.evaluate = trainer.dataset, trainer.evaluate

    def __call__(self, trial):
        if trial.split == 1:
            trial.report(0.5, 0, model=self.trainer.build_model(1))
            raise RuntimeError("split 1 dies")
        self.trainer(trial)


@pytest.mark.slow
def test_synchronous_mode_goes_on_after_the_timeout_when_a_split_dies(study_name, digits):
    x, y = digits
    timeout = 1.5
    study = optuna_mto.create_study(
        study_name=study_name,
        n_splits=3,
        transfer=GreedyTransfer(synchronous=True, sync_timeout=timeout),
        max_retries=0,
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="split 1 dies"):
        study.optimize(_CrashAtStep1(digits_trainer(x, y, epochs=3)), n_jobs=3, executor="thread")
    elapsed = time.monotonic() - start
    states = {t.params["split"]: t.state for t in study.study.get_trials()}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.COMPLETE}
    assert elapsed >= 2 * timeout  # steps 1 and 2 each waited for the dead split


def test_selection_set_is_held_out_and_ranks_the_models(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=3, selection_fraction=0.2)
    study.optimize(digits_trainer(x, y, epochs=3))
    selection = study.selection_indices(len(x))
    assert len(selection) == round(0.2 * len(x))
    for train, valid in study.splits(len(x)):
        assert (
            not np.intersect1d(selection, train).size and not np.intersect1d(selection, valid).size
        )
    summary = study.summary()
    assert summary.uses_selection
    scores = dict(enumerate(summary.selection))
    assert summary.ranking == sorted(scores, key=lambda k: (-scores[k], k))
    trainer = digits_trainer(x, y)
    best = study.load_best_model(trainer.build_model(0))
    assert trainer.evaluate(best, selection) == pytest.approx(scores[summary.best_split])
    assert study.study.best_trial.params["split"] == summary.best_split
    for split in range(3):  # a model never trains on its own split's validation rows...
        own_lineage = summary.overlap[split]
        assert 0.0 <= own_lineage.min() and own_lineage.max() <= 1.0
    independent = [
        s for s in range(3) if not study.transfers() or all(
            not e.accepted for e in study.transfers() if e.receiver == s
        )
    ]  # fmt: skip
    for split in independent:
        assert summary.overlap[split, split] == 0.0
        # ...but random splits overlap: it has trained on most other validation rows.
        assert summary.seen_share[split] > 0.6
