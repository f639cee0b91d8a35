"""Crashes, kills, corrupted checkpoints and flaky storage: nothing lost, nothing corrupted."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from _models import digits_trainer
from _util import kill_group_once_splits_run
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.rdb import get_engine

TESTS = Path(__file__).parent
EPOCHS = 12

RUN_STUDY = textwrap.dedent(
    """
    import sys, torch
    from sklearn.datasets import load_digits
    import optuna_mto
    from _models import SlowTrainer, tiny_mlp, adam_fast

    url, name = sys.argv[1], sys.argv[2]
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    trainer = SlowTrainer(tiny_mlp, (x, y), epochs=EPOCHS, optimizer_fn=adam_fast, epoch_s=0.25)
    study = optuna_mto.create_study(study_name=name, storage=url, n_splits=4,
                                    heartbeat_interval=1, grace_period=3, load_if_exists=True)
    study.optimize(trainer, n_jobs=4, executor="thread")
    print("DONE", flush=True)
    """
).replace("EPOCHS", str(EPOCHS))


def _run(url: str, name: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_STUDY, url, name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.smoke
@pytest.mark.slow
def test_sigkill_mid_training_then_restart_resumes_every_split(storage_url, study_name):
    first = _run(storage_url, study_name, start_new_session=True)
    storage = optuna_mto._storage.rdb.open_storage(storage_url)
    kill_group_once_splits_run(first, storage, study_name, 4)  # all 4 splits mid-training
    study = optuna.load_study(study_name=study_name, storage=storage)
    killed = {t.params["split"]: t for t in study.get_trials()}
    assert all(t.state == TrialState.RUNNING for t in killed.values())

    second = _run(storage_url, study_name)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0 and "DONE" in out, out

    trials = study.get_trials()
    done = {t.params["split"]: t for t in trials if t.state == TrialState.COMPLETE}
    assert sorted(done) == [0, 1, 2, 3]
    assert sum(t.state == TrialState.FAIL for t in trials) == 4  # the killed attempts
    lost = {}
    for split, trial in done.items():
        last_before_kill = max(killed[split].intermediate_values)
        resumed = trial.system_attrs["mto:resumed_from_step"]
        assert trial.system_attrs["mto:retried_from"] == killed[split]._trial_id
        lost[split] = last_before_kill - resumed
        assert 0 <= lost[split] <= 1  # at most one report interval lost
        assert sorted(trial.intermediate_values) == list(range(EPOCHS))  # no gap, no repeat
        for step in range(resumed + 1):  # the curve before the kill is carried over
            assert trial.intermediate_values[step] == killed[split].intermediate_values[step]
    print(f"SIGKILL of 4 running splits survived; steps lost per split: {lost}")


class _CrashOnce:
    """Objective wrapper: the first run of split 0 dies after reporting step 4."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.dataset, self.evaluate = trainer.dataset, trainer.evaluate
        self.crashed = False

    def __call__(self, trial) -> None:
        if trial.split == 0 and not self.crashed:
            original = trial.report

            def report(value, step, **kwargs):
                result = original(value, step, **kwargs)
                if step == 4:
                    self.crashed = True
                    raise RuntimeError("simulated crash")
                return result

            trial.report = report
        self.trainer(trial)


def test_corrupted_latest_checkpoint_resume_falls_back_to_previous(study_name, digits, tmp_path):
    x, y = digits
    # No retry in this call (a retry would resume at once): the crash ends the call.
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, max_retries=0)
    objective = _CrashOnce(digits_trainer(x, y, epochs=8))
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="simulated crash"):
        study.optimize(objective)
    record = study.records()[0]
    assert record.step == 4
    latest = tmp_path / "home" / "artifacts" / study_name / record.checkpoint.artifact_id
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as by a dying disk write

    optuna_mto.load_study(study_name=study_name, max_retries=1).optimize(objective)
    trial = next(
        t
        for t in study.study.get_trials()
        if t.state == TrialState.COMPLETE and t.params["split"] == 0
    )
    assert trial.system_attrs["mto:resumed_from_step"] == 3
    assert any(k.startswith("bad_checkpoint:") for k in trial.user_attrs)
    assert sorted(trial.intermediate_values) == list(range(8))
    assert study.summary().complete


def test_transient_storage_faults_lose_nothing(tmp_path, study_name, digits):
    x, y = digits
    url = f"sqlite:///{tmp_path / 'flaky.db'}"
    study = optuna_mto.create_study(
        study_name=study_name, storage=url, n_splits=3, artifact_store="database"
    )
    engine = get_engine(study.study._storage)
    rng = random.Random(0)
    injected = []

    def flaky(conn, cursor, statement, *args):
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE") and rng.random() < 0.1:
            injected.append(statement.split()[0:3])
            raise sqlite3.OperationalError("database is locked")

    sqlalchemy.event.listen(engine, "before_cursor_execute", flaky)
    try:
        study.optimize(digits_trainer(x, y, epochs=4))
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", flaky)

    assert len(injected) >= 10, injected
    trials = study.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [0, 1, 2, 3] for t in trials)
    assert sorted(study.records()) == [0, 1, 2]
    assert study.summary().complete
    for record in study.records().values():
        study.checkpoint_store.load(record.best_checkpoint)
    print(f"{len(injected)} storage faults injected, nothing lost")


def test_mismatched_model_error_names_the_first_tensor(study_name, digits):
    x, y = digits
    trainer = digits_trainer(x, y, epochs=2)
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)

    def objective(trial):
        model = trainer.build_model(0)
        if trial.split == 1:  # a different architecture: 16 -> 20 hidden units
            model = torch.nn.Sequential(
                torch.nn.Linear(64, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10)
            )
        for step in range(2):
            trial.report(0.9 - 0.8 * trial.split, step, model=model)

    with pytest.raises(
        optuna_mto.SplitsGivenUpError,
        match=r"ArchitectureMismatchError: Split 1's model differs from that of split 0 .*"
        r"tensor '0.weight' has shape \(20, 64\) here but \(16, 64\) in split 0",
    ):  # at split 1's first report, not at its first transfer
        study.optimize(objective, dataset=(x, y), evaluate=lambda m, i: 0.9)


import torch  # noqa: E402  (used by the test above)


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_running_and_the_next_run_resumes(tmp_path, study_name):
    url = f"sqlite:///{tmp_path / 'ctrlc.db'}"
    first = _run(url, study_name, start_new_session=True)
    storage = optuna_mto._storage.rdb.open_storage(url)
    deadline = time.monotonic() + 120
    trials = []
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
        except KeyError:
            trials = []
        if len(trials) == 4 and all(len(t.intermediate_values) >= 2 for t in trials):
            break
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    out, _ = first.communicate(timeout=60)
    assert first.returncode != 0 and "KeyboardInterrupt" in out, out
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [t.state for t in study.get_trials()]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states
    artifacts = tmp_path / "home" / "artifacts" / study_name
    assert not [p for p in artifacts.iterdir() if p.name.endswith(".tmp")]
    claims = optuna_mto.load_study(study_name=study_name, storage=url)._claims.latest()
    interrupted = [c for c in claims.values() if c.interrupted]
    assert interrupted and all(c.errors == 0 for c in interrupted)  # no retry used up
    assert all(c.preemptions(latest_failed=True) == 0 for c in interrupted)

    second = _run(url, study_name)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0 and "DONE" in out, out
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(t.params["split"] for t in done) == [0, 1, 2, 3]
    assert all(t.system_attrs.get("mto:resumed_from_step", -1) >= 0 for t in done)


class _AlwaysCrashOnSplit1:
    def __init__(self, trainer, crash: bool = True) -> None:
        self.trainer, self.crash = trainer, crash
        self.dataset, self.evaluate = trainer.dataset, trainer.evaluate

    def __call__(self, trial) -> None:
        if trial.split == 1 and self.crash:
            raise RuntimeError("split 1 is broken")
        self.trainer(trial)


def test_a_split_given_up_after_max_retries_is_reported_and_can_be_rerun(
    study_name, digits, caplog
):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, max_retries=1)
    broken = _AlwaysCrashOnSplit1(digits_trainer(x, y, epochs=1))
    for _ in range(2):  # the first try, then its one retry (an error at the start: per call)
        with pytest.raises(optuna_mto.SplitsGivenUpError, match="split 1 is broken"):
            study.optimize(broken)
    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(broken)  # nothing left to run: split 1 is given up, and it says so
    assert "1 of 2 split(s) given up" in str(info.value)
    assert "[2 errors > max_retries=1]" in str(info.value)
    assert not study.summary().complete
    # A different retry budget is not a config conflict; with it the split runs again.
    optuna_mto.create_study(study_name=study_name, n_splits=2, max_retries=3, load_if_exists=True)
    fixed = _AlwaysCrashOnSplit1(digits_trainer(x, y, epochs=1), crash=False)
    optuna_mto.load_study(study_name=study_name, max_retries=3).optimize(fixed)
    assert study.summary().complete


def test_an_error_before_the_first_report_is_not_retried_in_the_same_call(
    study_name, digits, caplog
):
    # A deterministic error at the start (a wrong shape, a typo) would recur on every
    # retry: one attempt per optimize call, then the next call (after the fix) retries.
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=3, max_retries=2)
    broken = _AlwaysCrashOnSplit1(digits_trainer(x, y, epochs=1))
    with caplog.at_level("WARNING"), pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(broken, n_jobs=2, executor="thread")
    assert "0 of 3 split(s) given up, 1 left failed" in str(info.value)
    assert "split 1 (trial" in str(info.value) and "not retried in this call" in str(info.value)
    split_1 = [t for t in study.study.get_trials() if t.params["split"] == 1]
    assert [t.state for t in split_1] == [TrialState.FAIL]  # not retried by the other worker
    assert split_1[0].system_attrs["mto:failed_at_start"] is True
    assert "failed before its first report: RuntimeError: split 1 is broken. Not retried" in (
        caplog.text
    )
    assert {t.params["split"] for t in study.study.get_trials() if t.state.is_finished()} == {
        0, 1, 2
    }  # fmt: skip
    fixed = _AlwaysCrashOnSplit1(digits_trainer(x, y, epochs=1), crash=False)
    study.optimize(fixed, n_jobs=2, executor="thread")
    assert study.summary().complete
