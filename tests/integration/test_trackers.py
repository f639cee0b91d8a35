"""MLflowCallback and TensorBoardCallback: real stores and event files, read back."""

from __future__ import annotations

import warnings

import optuna
import pytest
from _models import adam_suggested, digits_trainer
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._workers.lifecycle import split_statuses
from optuna_mto.transfer import GreedyTransfer, NoTransfer

EPOCHS = 2


class Recorder:
    """An Optuna-style callback that also takes every report."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, int, TrialState]] = []
        self.reports: list[tuple[int, int, float]] = []

    def on_report(self, trial, result) -> None:
        self.reports.append((trial.split, result.step, result.fitness))

    def __call__(self, study, trial) -> None:
        assert isinstance(study, optuna.Study)
        self.ended.append((study.study_name, trial.system_attrs["mto:split"], trial.state))


def test_mlflow_one_run_per_split_with_its_curve(study_name, digits, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from optuna_mto.integration import MLflowCallback

    x, y = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(donor="uniform"),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    recorder = Recorder()
    trainer = digits_trainer(x, y, epochs=EPOCHS, optimizer_fn=adam_suggested)
    study.optimize(
        trainer, n_jobs=2, executor="thread", dashboard=False,
        callbacks=[MLflowCallback(tracking_uri=uri, experiment_name="mto"), recorder],
    )  # fmt: skip
    assert sorted(recorder.ended) == [(study_name, 0, TrialState.COMPLETE),
                                      (study_name, 1, TrialState.COMPLETE)]  # fmt: skip
    assert sorted((s, step) for s, step, _ in recorder.reports) == [
        (s, e) for s in range(2) for e in range(EPOCHS)
    ]

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mto").experiment_id])
    assert len(runs) == 2
    trials = {t.system_attrs["mto:split"]: t for t in study.study.get_trials()}
    for run in runs:
        split = int(run.data.tags["optuna_mto.split"])
        trial = trials[split]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna_mto.study"] == study_name
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        history = client.get_metric_history(run.info.run_id, "value")
        assert sorted(m.step for m in history) == list(range(EPOCHS))
        by_step = {m.step: m.value for m in history}
        fitness = [f for s, _, f in sorted(recorder.reports) if s == split]
        assert [by_step[e] for e in range(EPOCHS)] == pytest.approx(fitness)
        lr_curve = client.get_metric_history(run.info.run_id, "hparams/lr")
        assert len(lr_curve) == EPOCHS
        assert run.data.metrics["trial_value"] == pytest.approx(trial.value)
        assert "cross_split_mean" in run.data.metrics


def test_tensorboard_event_files_per_split_from_process_workers(study_name, digits, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from optuna_mto.integration import TensorBoardCallback

    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    callback = TensorBoardCallback(tmp_path / "tb")
    trainer = digits_trainer(x, y, epochs=EPOCHS, optimizer_fn=adam_suggested)
    # Process workers: each gets a pickled copy of the callback and writes its splits.
    study.optimize(trainer, n_jobs=2, executor="process", dashboard=False, callbacks=[callback])
    trials = {t.system_attrs["mto:split"]: t for t in study.study.get_trials()}
    for split in range(2):
        events = EventAccumulator(str(callback.split_dir(study_name, split)))
        events.Reload()
        values = events.Scalars("value")
        assert [e.step for e in values] == list(range(EPOCHS))
        assert [e.value for e in values] == pytest.approx(
            [trials[split].intermediate_values[e] for e in range(EPOCHS)], rel=1e-6
        )
        lr = events.Scalars("hparams/lr")
        assert lr[-1].value == pytest.approx(trials[split].params["lr"], rel=1e-6)


def test_callbacks_must_be_callable(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=1, transfer=NoTransfer())
    with pytest.raises(ValueError, match="callable as callback"):
        study.optimize(digits_trainer(x, y, epochs=1), callbacks=["mlflow"])


def test_tracker_callbacks_are_experimental(tmp_path):
    from optuna_mto.integration import TensorBoardCallback

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TensorBoardCallback(tmp_path)
    assert any(issubclass(w.category, optuna.exceptions.ExperimentalWarning) for w in caught)


class _StopAfterCheckpoint:
    """A report hook ahead of the tracker: Ctrl-C once split 0 checkpointed step 2.

    The same point a SIGKILL can hit: the step is checkpointed, the tracker never heard
    of it, and the resumed run starts at step 3.
    """

    def __call__(self, study, trial) -> None:
        pass

    def on_report(self, trial, result) -> None:
        if trial.split == 0 and result.step == 2 and trial.resumed_at is None:
            raise KeyboardInterrupt


def test_mlflow_keeps_the_step_a_killed_run_checkpointed_but_never_logged(
    study_name, digits, tmp_path
):
    mlflow = pytest.importorskip("mlflow")
    from optuna_mto.integration import MLflowCallback

    x, y = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    trainer = digits_trainer(x, y, epochs=4)
    tracker = MLflowCallback(tracking_uri=uri, experiment_name="mto")
    with pytest.raises(KeyboardInterrupt):
        study.optimize(trainer, dashboard=False, callbacks=[_StopAfterCheckpoint(), tracker])
    study.optimize(trainer, dashboard=False, callbacks=[MLflowCallback(uri, "mto")])
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mto").experiment_id])
    run = next(r for r in runs if r.data.tags["optuna_mto.split"] == "0")
    history = client.get_metric_history(run.info.run_id, "value")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    resumed = [t for t in study.study.get_trials() if t.params["split"] == 0][-1]
    assert resumed.user_attrs["resumed_from_step"] == 2


class BrokenTracker:
    """A tracker whose every call fails, as one whose store went away mid-run."""

    def on_report(self, trial, result) -> None:
        raise RuntimeError("the tracker's store is gone")

    def __call__(self, study, trial) -> None:
        raise RuntimeError("the tracker's store is gone")


def test_a_failing_callback_never_kills_a_worker_and_optimize_names_it(
    study_name, digits, tmp_path
):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, storage=f"sqlite:///{tmp_path / 'study.db'}", n_splits=2,
        transfer=NoTransfer(),
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=EPOCHS)
    recorder = Recorder()  # a working callback next to the broken one still gets every call
    with pytest.raises(optuna_mto.CallbackError, match="BrokenTracker failed 6 times") as err:
        study.optimize(
            trainer, n_jobs=2, executor="process", dashboard=False,
            callbacks=[BrokenTracker(), recorder],
        )  # fmt: skip
    assert err.value.failures == {"BrokenTracker": 6}  # 2 splits x (2 reports + 1 end)
    trials = study.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # no retry, no lost worker
    assert all(s.preemptions == 0 and s.errors == 0 for s in split_statuses(study._rt))
    assert study.summary().complete


def test_a_tracker_whose_store_is_unreachable_stops_optimize_before_any_split(
    study_name, digits, tmp_path
):
    pytest.importorskip("mlflow")
    from optuna_mto.integration import MLflowCallback

    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    (tmp_path / "a-file").write_text("")  # no folder can be made inside it
    tracker = MLflowCallback(tracking_uri=f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    with pytest.raises(optuna_mto.CallbackError, match="MLflowCallback could not start"):
        study.optimize(digits_trainer(x, y, epochs=1), n_jobs=2, executor="process",
                       dashboard=False, callbacks=[tracker])  # fmt: skip
    assert study.study.get_trials() == []  # nothing ran


def test_a_tensorboard_folder_that_cannot_be_made_stops_optimize_before_any_split(
    study_name, digits, tmp_path
):
    pytest.importorskip("tensorboard")
    from optuna_mto.integration import TensorBoardCallback

    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    (tmp_path / "a-file").write_text("")
    with pytest.raises(optuna_mto.CallbackError, match="TensorBoardCallback could not start"):
        study.optimize(digits_trainer(x, y, epochs=1), dashboard=False,
                       callbacks=[TensorBoardCallback(tmp_path / "a-file")])  # fmt: skip
    assert study.study.get_trials() == []


def _mlflow_readme_form(study_name: str, digits, folder) -> None:
    """README's MLflow form on a new SQLite database, three process workers, K=3."""
    mlflow = pytest.importorskip("mlflow")
    from optuna_mto.integration import MLflowCallback

    x, y = digits
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    study = optuna_mto.create_study(
        study_name=study_name, storage=f"sqlite:///{folder / 'study.db'}", n_splits=3,
        transfer=GreedyTransfer(),
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=EPOCHS, optimizer_fn=adam_suggested)
    study.optimize(trainer, n_jobs=3, executor="process", dashboard=False,
                   callbacks=[MLflowCallback(tracking_uri=uri)])  # fmt: skip
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(study_name).experiment_id])
    assert sorted(r.data.tags["optuna_mto.split"] for r in runs) == ["0", "1", "2"]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "value")
        assert sorted(m.step for m in history) == list(range(EPOCHS))
        assert "trial_value" in run.data.metrics


def test_mlflow_on_a_new_sqlite_database_with_three_process_workers(study_name, digits, tmp_path):
    _mlflow_readme_form(study_name, digits, tmp_path / "run")


@pytest.mark.slow
def test_mlflow_on_a_new_sqlite_database_five_times(digits, tmp_path):
    # The tables used to be created by every worker at once, which failed now and then.
    for i in range(5):
        _mlflow_readme_form(f"mlflow-{i}", digits, tmp_path / f"run{i}")
