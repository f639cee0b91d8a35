"""Optuna's own machinery in a study: sampler, pruner, callbacks, true params, artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from _models import HOPELESS_SPLIT, adam_suggested, digits_trainer, tiny_mlp
from _util import kill_group_once_splits_run
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._step import report as _report
from optuna_mto._storage.rdb import get_engine
from optuna_mto._study.optuna_parts import OPTUNA_PARTS_KEY
from optuna_mto.transfer import GreedyTransfer, NoTransfer, PBTTransfer

TESTS = Path(__file__).parent
EPOCHS = 8

RUN_STUDY = textwrap.dedent(
    """
    import sys, optuna, torch
    from sklearn.datasets import load_digits
    import optuna_mto
    from optuna_mto.integration import MLflowCallback
    from optuna_mto.transfer import NoTransfer
    from _models import SlowTrainer, adam_suggested, mlp_hopeless_split1

    url, name, n_jobs, mlruns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    trainer = SlowTrainer(mlp_hopeless_split1, (x, y), epochs=EPOCHS,
                          optimizer_fn=adam_suggested, epoch_s=0.25, prune=True)
    study = optuna_mto.create_study(
        study_name=name, storage=url, n_splits=4, transfer=NoTransfer(),
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
        heartbeat_interval=1, grace_period=3, load_if_exists=True)
    study.optimize(trainer, n_jobs=n_jobs, executor="thread",
                   callbacks=[MLflowCallback(tracking_uri=mlruns)])
    print("DONE", flush=True)
    """
).replace("EPOCHS", str(EPOCHS))


def _run(url: str, name: str, n_jobs: int, mlruns: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_STUDY, url, name, str(n_jobs), mlruns],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _by_split(study: optuna.Study) -> dict[int, list[optuna.trial.FrozenTrial]]:
    out: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        out.setdefault(trial.system_attrs["mto:split"], []).append(trial)
    return out


@pytest.mark.slow
def test_sampler_pruner_sigkill_resume_mlflow_and_artifacts(tmp_path, study_name):
    """The issue's acceptance run: TPESampler(seed=0) + MedianPruner, SIGKILL, resume."""
    mlflow = pytest.importorskip("mlflow")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    mlruns = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _run(url, study_name, 2, mlruns)  # splits 0 and 1 start side by side
    storage = optuna_mto._storage.rdb.open_storage(url)
    kill_group_once_splits_run(first, storage, study_name, 2)
    study = optuna.load_study(study_name=study_name, storage=storage)
    sampled = {t.system_attrs["mto:split"]: t.params["lr"] for t in study.get_trials()}
    assert len(set(sampled.values())) == 2  # the sampler drew one lr per split

    # Splits 2 and 3 run first (fresh), then 0 and 1 resume; split 1, hopeless, resumes
    # last, when 3 splits have completed: MedianPruner(n_startup_trials=3) prunes it.
    second = _run(url, study_name, 1, mlruns)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0 and "DONE" in out, out

    by_split = _by_split(optuna.load_study(study_name=study_name, storage=storage))
    for split in (0, 1):
        killed, resumed = sorted(by_split[split], key=lambda t: t.number)
        assert killed.state == TrialState.FAIL
        assert resumed.params["lr"] == killed.params["lr"] == sampled[split]  # kept
        assert resumed.user_attrs["current_hparams"] == {"lr": sampled[split]}
        assert resumed.system_attrs["mto:attempt"] == 1
    final = {split: max(trials, key=lambda t: t.number) for split, trials in by_split.items()}
    assert final[HOPELESS_SPLIT].state == TrialState.PRUNED
    assert "fail_reason" not in final[HOPELESS_SPLIT].system_attrs
    assert [final[k].state for k in (0, 2, 3)] == [TrialState.COMPLETE] * 3
    assert len(by_split[HOPELESS_SPLIT]) == 2  # pruned once, never retried

    mto = optuna_mto.load_study(study_name=study_name, storage=url)
    summary = mto.summary()
    assert sorted(summary.ranking) == [0, 2, 3] and summary.pruned[HOPELESS_SPLIT]
    assert "pruned" in summary.to_table()
    assert mto.records()[HOPELESS_SPLIT].pruned

    # The dashboard's artifact panel: each completed split lists its best checkpoint.
    for split in (0, 2, 3):
        metas = optuna.artifacts.get_all_artifact_meta(final[split], storage=storage)
        assert [m.filename.split("-best-")[0] for m in metas] == [f"{study_name}-split{split}"]
        path = tmp_path / f"split{split}.pt"
        optuna.artifacts.download_artifact(
            artifact_store=mto.checkpoint_store.artifact_store,
            artifact_id=metas[0].artifact_id, file_path=str(path),
        )  # fmt: skip
        state = torch.load(path, weights_only=True)
        tiny_mlp().load_state_dict(state["model"])
    assert optuna.artifacts.get_all_artifact_meta(final[HOPELESS_SPLIT], storage=storage) == []
    mto.export_best_model(tmp_path / "best.pt")
    (exported,) = optuna.artifacts.get_all_artifact_meta(mto.study)
    assert exported.filename == "best.pt"

    # MLflow: one run per split (a resumed split continues its run), read back.
    client = mlflow.tracking.MlflowClient(tracking_uri=mlruns)
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["optuna_mto.split"] for r in runs) == ["0", "1", "2", "3"]
    status = {int(r.data.tags["optuna_mto.split"]): r.info.status for r in runs}
    assert status == {0: "FINISHED", 1: "KILLED", 2: "FINISHED", 3: "FINISHED"}
    for run in runs:
        split = int(run.data.tags["optuna_mto.split"])
        assert float(run.data.params["lr"]) == pytest.approx(final[split].params["lr"])
        history = client.get_metric_history(run.info.run_id, "value")
        steps = sorted({m.step for m in history})
        if split != HOPELESS_SPLIT:
            assert steps == list(range(EPOCHS))
            assert "cross_split_mean" in run.data.metrics


def test_retried_split_keeps_its_sampled_params(storage_url, study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, transfer=NoTransfer(),
        sampler=optuna.samplers.RandomSampler(seed=1), heartbeat_interval=None,
    )  # fmt: skip
    seen: list[tuple[int, int, float, str]] = []

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        act = trial.suggest_categorical("act", ["relu", "tanh"])
        seen.append((trial.split, trial.attempt, lr, act))
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for step in range(trial.restore(model, opt), 3):
            trial.report(0.5, step, model=model, optimizer=opt)
            if trial.split == 1 and trial.attempt == 0 and step == 1:
                raise RuntimeError("crash")
        return 0.5

    study.optimize(objective, dataset=len(x), dashboard=False)  # the crash is retried in it
    by_split = {}
    for split, attempt, lr, act in seen:
        by_split.setdefault(split, []).append((attempt, lr, act))
    assert [a for a, _, _ in by_split[1]] == [0, 1]
    assert by_split[1][0][1:] == by_split[1][1][1:]  # same lr and act on the retry
    assert by_split[0][0][1] != by_split[1][0][1]  # the sampler drew per split
    trials = sorted(study.study.get_trials(), key=lambda t: t.number)
    retried = [t for t in trials if t.system_attrs["mto:split"] == 1]
    assert retried[0].params == retried[1].params
    assert retried[1].state == TrialState.COMPLETE


def test_pruned_split_is_pruned_not_failed_and_no_donor(study_name, digits):
    x, y = digits
    calls: list[tuple[int, TrialState]] = []
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=3, transfer=GreedyTransfer(donor="uniform"),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1), heartbeat_interval=None,
    )  # fmt: skip

    def objective(trial):
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(3):
            # Split 2 runs last, and reports far worse than the finished splits.
            trial.report(0.05 if trial.split == 2 else 0.9, step, model=model, optimizer=opt)
            if trial.should_prune():
                raise optuna.TrialPruned()

    def evaluate(model, indices):
        return 0.5

    study.optimize(
        objective, dataset=len(x), evaluate=evaluate, dashboard=False,
        callbacks=[lambda s, t: calls.append((t.system_attrs["mto:split"], t.state))],
    )  # fmt: skip
    assert calls == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE), (2, TrialState.PRUNED)]
    study.optimize(objective, dataset=len(x), evaluate=evaluate, dashboard=False)  # no retry
    trials = study.study.get_trials()
    assert len(trials) == 3 and trials[2].state == TrialState.PRUNED
    assert trials[2].system_attrs["mto:pruned"] == {"step": 0}
    summary = study.summary()
    assert summary.ranking == [0, 1] and summary.pruned == [False, False, True]
    assert summary.complete
    record = study.records()[2]
    assert record.finished and record.pruned
    # Its checkpoints are gone and, being pruned, it is nobody's donor from now on.
    folder = Path(study.config.artifact_store["path"])
    assert not any(p.name.startswith(f"mto-{study_name}-split2") for p in folder.iterdir())


def test_pruned_record_is_never_a_donor(study_name):
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, heartbeat_interval=None)
    records = {}

    def objective(trial):
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trial.report(0.9 if trial.split == 0 else 0.1, 0, model=model, optimizer=opt)
        if trial.split == 0:
            raise optuna.TrialPruned()
        records.update(trial._shared.board.read())
        board = trial._shared.board.read()
        records["context"] = _report._context(trial._shared, trial._handle, 1, 0.1, board)

    study.optimize(objective, dataset=100, evaluate=lambda m, i: 0.5, dashboard=False)
    assert records[0].pruned and records["context"].others == {}


def test_sampler_and_pruner_reach_process_workers_and_remote_workers(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=NoTransfer(),
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(),
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=1, optimizer_fn=adam_suggested)
    study.optimize(trainer, n_jobs=2, executor="process", dashboard=False)
    lrs = [t.params["lr"] for t in study.study.get_trials()]
    assert len(lrs) == 2 and lrs[0] != lrs[1]  # each process reseeds its copy
    stored = study.study._storage.get_study_system_attrs(study.study._study_id)
    assert stored[OPTUNA_PARTS_KEY] == {"sampler": "RandomSampler", "pruner": "NopPruner"}
    # A worker elsewhere gets the recorded classes (default arguments) ...
    loaded = optuna_mto.load_study(study_name=study_name)
    assert isinstance(loaded.study.sampler, optuna.samplers.RandomSampler)
    assert isinstance(loaded.study.pruner, optuna.pruners.NopPruner)
    # ... or exactly what it passes.
    mine = optuna.pruners.MedianPruner(n_startup_trials=7)
    assert optuna_mto.load_study(study_name=study_name, pruner=mine).study.pruner is mine
    with pytest.raises(ValueError, match="sampler must be an Optuna BaseSampler"):
        optuna_mto.load_study(study_name=study_name, sampler="tpe")


def test_a_pruner_that_needs_its_arguments_falls_back_to_the_default(study_name, caplog):
    """ThresholdPruner has no default bounds: a worker elsewhere (or the CLI) still opens."""
    optuna_mto.create_study(
        study_name=study_name, n_splits=2, pruner=optuna.pruners.ThresholdPruner(upper=1.0)
    )
    with caplog.at_level("WARNING", logger="optuna_mto"):
        loaded = optuna_mto.load_study(study_name=study_name)
    assert isinstance(loaded.study.pruner, optuna.pruners.MedianPruner)
    assert "ThresholdPruner, which cannot be rebuilt without its arguments" in caplog.text
    assert "load_study(..., pruner=...)" in caplog.text
    mine = optuna.pruners.ThresholdPruner(upper=2.0)
    assert optuna_mto.load_study(study_name=study_name, pruner=mine).study.pruner is mine


def test_study_made_before_samplers_were_recorded_still_opens(study_name):
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    with get_engine(study.study._storage).begin() as conn:  # as an older version wrote it
        conn.exec_driver_sql(
            "DELETE FROM study_system_attributes WHERE key = ?", (OPTUNA_PARTS_KEY,)
        )
    loaded = optuna_mto.load_study(study_name=study_name)
    assert isinstance(loaded.study.sampler, optuna.samplers.TPESampler)


def test_pbt_records_true_params_through_transfers_and_exploration(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=3, seed=0,
        transfer=PBTTransfer(donor="uniform", only_better=False, resample_probability=0.0),
        sampler=optuna.samplers.RandomSampler(seed=3),
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=3, optimizer_fn=adam_suggested)
    study.optimize(trainer, n_jobs=1, dashboard=False)
    kept = 0
    for trial in study.study.get_trials():
        records = {k: v for k, v in trial.user_attrs.items() if k.startswith("hparams:")}
        current = trial.user_attrs["current_hparams"]
        # The checkpoint the split exports runs with the recorded current values.
        state = study.checkpoint_store.load(
            optuna_mto.checkpoints.CheckpointRef.from_dict(
                trial.system_attrs["mto:best"]["checkpoint"]
            )
        )
        best_values = state.get("hparams", {"values": {"lr": trial.params["lr"]}})["values"]
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(best_values["lr"])
        for key, event in trial.user_attrs.items():
            if not key.startswith("transfer:") or not event["accepted"]:
                continue
            kept += 1
            record = records[f"hparams:{key.split(':')[1]}"]
            assert record["source"]["via"] == event["donor"]  # whose values it runs with
            assert record["source"]["explored"] is True
            assert set(event["hparams"]) == {"lr"}
            assert record["values"]["lr"] == event["hparams"]["lr"][1]
        if records:
            last = records[max(records)]
            assert current == last["values"]
        assert json.dumps(current)
    assert kept > 0


def test_cli_worker_takes_the_sampler_and_pruner_by_name(study_name, tmp_path):
    import argparse

    from optuna_mto import cli

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    optuna_mto.create_study(study_name=study_name, storage=url, n_splits=1)
    args = argparse.Namespace(
        study=study_name, storage=url, sampler="optuna.samplers:RandomSampler",
        pruner="optuna.pruners:NopPruner",
    )  # fmt: skip
    study = cli._open(args)
    assert isinstance(study.study.sampler, optuna.samplers.RandomSampler)
    assert isinstance(study.study.pruner, optuna.pruners.NopPruner)
    worker_help = cli._parser()._subparsers._group_actions[0].choices["worker"].format_help()
    assert "--sampler" in worker_help and "--pruner" in worker_help


def test_pbt_explores_any_suggested_hyperparameter_through_a_hook(study_name):
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, heartbeat_interval=None,
        transfer=PBTTransfer(resample_probability=0.0), sampler=optuna.samplers.RandomSampler(0),
    )  # fmt: skip
    seen: dict[int, list[dict]] = {0: [], 1: []}
    optimizers = {}

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.1, 0.5)
        model = torch.nn.Sequential(torch.nn.Dropout(dropout), tiny_mlp())
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        optimizers[trial.split] = opt

        def apply(params):  # a hyperparameter the optimizer does not hold
            model[0].p = params["dropout"]
            seen[trial.split].append(params)

        trial.on_hparams_change(apply)
        for step in range(2):  # split 0 finishes first; split 1 takes its weights at step 1
            trial.report(0.9 if trial.split == 0 else 0.1, step, model=model, optimizer=opt)

    study.optimize(objective, dataset=100, evaluate=lambda m, rows: 0.5, dashboard=False)
    donor, receiver = sorted(study.study.get_trials(), key=lambda t: t.system_attrs["mto:split"])
    event = receiver.user_attrs["transfer:000001"]
    assert event["accepted"] and set(event["hparams"]) == {"lr", "dropout"}
    record = receiver.user_attrs["hparams:000001"]
    assert record["source"] == {
        "split": 0, "trial": donor.number, "step": 1, "explored": True, "via": 0
    }  # fmt: skip
    for name in ("lr", "dropout"):  # the donor's values, perturbed by x0.8 or x1.2
        ratio = record["values"][name] / donor.params[name]
        assert ratio == pytest.approx(0.8) or ratio == pytest.approx(1.2)
    assert seen[1] == [record["values"]] and seen[0] == []
    assert receiver.user_attrs["current_hparams"] == record["values"]
    assert optimizers[1].param_groups[0]["lr"] == pytest.approx(record["values"]["lr"])
    assert receiver.params["lr"] != record["values"]["lr"]  # params: what was sampled
