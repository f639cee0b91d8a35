"""End-to-end studies on real data and real storages (SQLite file and PostgreSQL)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
import torch
from _models import digits_trainer, tiny_mlp
from optuna.trial import TrialState

import optuna_mto
from optuna_mto.transfer import GreedyTransfer, NoTransfer


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_study_end_to_end_and_reload_from_fresh_process(storage_url, study_name, digits, tmp_path):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=3, seed=1, heartbeat_interval=5
    )
    study.optimize(digits_trainer(x, y, epochs=3))

    trials = study.study.get_trials()
    assert sorted(t.params["split"] for t in trials) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)
    summary = study.summary()
    assert summary.complete and not np.isnan(summary.matrix).any()
    assert summary.matrix.min() > 0.5  # real learning on real digits, far above 10% chance
    best = summary.best_split
    assert summary.mean[best] == max(summary.mean)
    # The Optuna value of each split trial is its cross-split mean, so optuna agrees.
    assert study.study.best_trial.params["split"] == best

    script = textwrap.dedent(
        f"""
        import optuna_mto
        study = optuna_mto.load_study(study_name={study_name!r}, storage={storage_url!r})
        print(study.summary())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == str(summary).strip()

    path = study.export_best_model(tmp_path / "export" / "best.pt")
    fresh = tiny_mlp()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert _states_equal(fresh.state_dict(), study.best_state_dict())
    valid = study.splits(len(x))[best][1]
    trainer = digits_trainer(x, y)
    assert trainer.evaluate(fresh, valid) == pytest.approx(summary.matrix[best, best])


def test_optimize_twice_runs_no_split_twice(tmp_path, study_name, digits):
    x, y = digits
    calls = []
    trainer = digits_trainer(x, y, epochs=2)

    def objective(trial):
        calls.append(trial.split)
        trainer(trial)

    study = optuna_mto.create_study(study_name=study_name, n_splits=3)
    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    again = optuna_mto.load_study(study_name=study_name)
    again.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)
    assert sorted(calls) == [0, 1, 2]
    assert len(study.study.get_trials()) == 3


def test_half_done_study_finishes_the_rest(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=3)
    study.optimize(digits_trainer(x, y, epochs=2), timeout=1e-9)  # one split, then stop
    assert len(study.study.get_trials()) == 1
    assert not study.summary().complete
    optuna_mto.load_study(study_name=study_name).optimize(digits_trainer(x, y, epochs=2))
    assert study.summary().complete
    assert sorted(t.params["split"] for t in study.study.get_trials()) == [0, 1, 2]


def _two_split_objective(trainer, learning_rates, log):
    def objective(trial):
        model = trainer.build_model(trial.split)
        opt = torch.optim.SGD(model.parameters(), lr=learning_rates[trial.split], momentum=0.9)
        for step in range(4):
            trainer.train_epoch(
                model, opt, trial.train_indices, torch.Generator().manual_seed(step)
            )
            before = {k: v.clone() for k, v in model.state_dict().items()}
            result = trial.report(trial.evaluate(model), step, model=model, optimizer=opt)
            after = {k: v.clone() for k, v in model.state_dict().items()}
            log.append((trial.split, result, before, after))

    return objective


def test_transfer_that_helps_is_accepted_and_copies_donor_weights(study_name, digits):
    x, y = digits
    trainer = digits_trainer(x, y)
    log = []
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(warmup=1)
    )
    # Split 0 learns and finishes first; split 1 (lr 0) cannot learn on its own.
    objective = _two_split_objective(trainer, {0: 0.1, 1: 0.0}, log)
    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)

    (split, result, before, after) = next(e for e in log if e[0] == 1 and e[1].transfer)
    event = result.transfer
    assert split == 1 and event.donor == 0 and event.accepted and result.accepted
    assert event.after > event.before
    assert result.fitness == event.after
    donor = study.records()[0]
    assert event.donor_step == donor.step
    donor_state = study.checkpoint_store.load(donor.checkpoint)["model"]
    assert _states_equal(after, donor_state)
    assert not _states_equal(before, donor_state)
    assert [e.accepted for e in study.transfers()] == [True]


def test_transfer_that_hurts_is_rejected_and_weights_are_unchanged(study_name, digits):
    x, y = digits
    trainer = digits_trainer(x, y)
    log = []
    study = optuna_mto.create_study(
        study_name=study_name,
        n_splits=2,
        transfer=GreedyTransfer(warmup=1, only_better=False),
    )
    # Split 0 (lr 0) stays at chance; split 1 learns and must refuse split 0's weights.
    objective = _two_split_objective(trainer, {0: 0.0, 1: 0.1}, log)
    study.optimize(objective, dataset=(x, y), evaluate=trainer.evaluate)

    rejected = [(r, b, a) for s, r, b, a in log if s == 1 and r.transfer is not None]
    assert rejected
    for result, before, after in rejected:
        assert result.transfer.donor == 0 and not result.accepted
        assert result.transfer.after < result.transfer.before
        assert _states_equal(before, after)
    events = study.transfers()
    assert events and not any(e.accepted for e in events)


def test_no_transfer_manager_never_pulls(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    study.optimize(digits_trainer(x, y, epochs=2))
    assert study.transfers() == []
    assert study.summary().complete


@pytest.mark.slow
def test_process_executor_runs_splits_concurrently(storage_url, study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(  # GreedyTransfer: transfers happen, across processes
        study_name=study_name, storage=storage_url, n_splits=4, heartbeat_interval=5,
        transfer=GreedyTransfer(),
    )  # fmt: skip
    study.optimize(digits_trainer(x, y, epochs=4), n_jobs=4, executor="process")
    trials = study.study.get_trials()
    assert sorted(t.params["split"] for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each split ran in its own process, and transfers crossed process boundaries.
    assert len({t.user_attrs["device"] for t in trials}) == 1
    events = study.transfers()
    assert events, "no transfer was even attempted across processes"
    trial_of = {t.number: t.params["split"] for t in trials}
    assert all(trial_of[e.donor_trial] == e.donor for e in events)


def test_bad_arguments_give_clear_errors(study_name, digits):
    with pytest.raises(ValueError, match="n_splits=0"):
        optuna_mto.create_study(study_name=study_name, n_splits=0)
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        optuna_mto.create_study(study_name=study_name, validation_fraction=1.5)
    with pytest.raises(ValueError, match="splitter='bootstrap'"):
        optuna_mto.create_study(study_name=study_name, splitter="bootstrap")
    with pytest.raises(ValueError, match="direction='max'"):
        optuna_mto.create_study(study_name=study_name, direction="max")
    with pytest.raises(ValueError, match="storage must be a database URL"):
        optuna_mto.create_study(study_name=study_name, storage="study.db")
    with pytest.raises(ValueError, match="artifact_store='s3'"):
        optuna_mto.create_study(study_name=study_name, artifact_store="s3")


def test_a_gpu_this_machine_lacks_is_refused_before_any_split_starts(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or the first of none
    with pytest.raises(ValueError, match=f"devices names '{missing}', but torch sees"):
        study.optimize(
            lambda trial: None, dataset=(x, y), evaluate=lambda m, i: 0.0, devices=["cpu", missing]
        )
    assert study.study.get_trials() == []


def test_unreachable_storage_error_masks_the_password():
    url = "postgresql+psycopg://alice:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(ValueError, match="Could not open the storage") as info:
        optuna_mto.create_study(study_name="x", storage=url)
    assert "s3cret" not in str(info.value)
    assert "alice:***@127.0.0.1:1" in str(info.value)


def test_conflicting_config_and_missing_study(study_name):
    optuna_mto.create_study(study_name=study_name, n_splits=3)
    with pytest.raises(optuna_mto.ConfigConflictError, match="n_splits: stored 3, given 4"):
        optuna_mto.create_study(study_name=study_name, n_splits=4, load_if_exists=True)
    same = optuna_mto.create_study(study_name=study_name, n_splits=3, load_if_exists=True)
    assert same.n_splits == 3
    with pytest.raises(KeyError, match="No study named 'missing'.*" + study_name):
        optuna_mto.load_study(study_name="missing")
    optuna.create_study(study_name="plain", storage=optuna_mto._storage.rdb.default_storage_url())
    with pytest.raises(ValueError, match="not created by optuna_mto"):
        optuna_mto.load_study(study_name="plain")


def test_a_direction_conflict_is_a_config_conflict_with_the_fix(study_name, digits):
    optuna_mto.create_study(study_name=study_name, direction="maximize")
    with pytest.raises(
        optuna_mto.ConfigConflictError,
        match=f"Study '{study_name}' exists with a different configuration \\(direction: "
        "stored 'maximize', given 'minimize'\\). Pass the stored values",
    ):
        optuna_mto.create_study(study_name=study_name, direction="minimize", load_if_exists=True)
    study = optuna_mto.load_study(study_name=study_name)
    x, y = digits
    loss_trainer = digits_trainer(x, y, metric="loss")
    with pytest.raises(
        optuna_mto.ConfigConflictError,
        match=f"metric='loss' is to minimize, but study '{study_name}' is stored with "
        "direction='maximize'. Create the study with direction='minimize'",
    ):
        study.optimize(loss_trainer)
    assert study.study.get_trials() == []


def test_a_worker_with_a_different_dataset_is_refused(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    study.optimize(digits_trainer(x, y, epochs=1))
    other = digits_trainer(x, torch.roll(y, 1), epochs=1)
    with pytest.raises(optuna_mto.DatasetMismatchError, match="same dataset"):
        optuna_mto.load_study(study_name=study_name).optimize(other)
    with pytest.raises(optuna_mto.DatasetMismatchError, match="1797 rows"):
        study.optimize(digits_trainer(x[:-1], y[:-1], epochs=1))


def test_transfer_without_evaluate_function_is_refused(study_name):
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    with pytest.raises(ValueError, match="evaluate function"):
        study.optimize(lambda trial: 0.0, dataset=100)


def test_objective_api_with_plain_values(study_name):
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())

    def objective(trial):
        for step in range(3):
            trial.report(float(step + trial.split), step)
        return 1.0 + trial.split

    study.optimize(objective, dataset=50)
    values = sorted(t.value for t in study.study.get_trials())
    assert values == [1.0, 2.0]
    assert math.isnan(study.summary().mean[0])  # no model reported: nothing to cross-score
