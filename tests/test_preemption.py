"""Preemption: killed workers and jobs, Ctrl-C, user errors, each counted apart; loud gaps."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import torch
from _models import FailOnSplit, digits_trainer
from conftest import postgres_url
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._workers.lifecycle import split_statuses

TESTS = Path(__file__).parent

JOB = textwrap.dedent(
    """
    import sys, torch
    from sklearn.datasets import load_digits
    import optuna_mto
    from _models import SlowTrainer, tiny_mlp, adam_fast

    url, name, executor, n_splits = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    epoch_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.3
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    trainer = SlowTrainer(tiny_mlp, (x, y), epochs=10, optimizer_fn=adam_fast, epoch_s=epoch_s)
    study = optuna_mto.create_study(study_name=name, storage=url, n_splits=n_splits,
                                    load_if_exists=True)  # default budgets and heartbeats
    if __name__ == "__main__":
        try:
            study.optimize(trainer, n_jobs=2, executor=executor)
        except KeyboardInterrupt:
            print("STOPPED", flush=True)
            sys.exit(130)
        print("DONE", flush=True)
    """
)


def _job(
    url: str, name: str, executor: str, n_splits: int, epoch_s: float = 0.3, **kwargs
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [sys.executable, "-c", JOB, url, name, executor, str(n_splits), str(epoch_s)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )  # fmt: skip


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def _wait(proc: subprocess.Popen, condition, what: str, timeout: float = 120) -> float:
    """Wait until ``condition()``; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {what}: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _steps(url: str, name: str) -> int:
    return sum(len(t.intermediate_values) for t in _trials(url, name))


@pytest.mark.slow
def test_three_job_kills_and_a_worker_kill_lose_no_split(tmp_path, study_name):
    url = f"sqlite:///{tmp_path / 'chaos.db'}"
    n_splits = 3
    takeover_s = []
    for _ in range(3):  # SIGKILL the whole job (parent and workers), as a preempted node
        job = _job(url, study_name, "process", n_splits, start_new_session=True)
        before = {t.number for t in _trials(url, study_name)}
        steps = _steps(url, study_name)
        try:
            takeover_s.append(
                _wait(
                    job,
                    lambda b=before: any(
                        t.number not in b and t.intermediate_values
                        for t in _trials(url, study_name)
                    ),
                    "a split trained again",
                )
            )
            _wait(job, lambda s=steps: _steps(url, study_name) >= s + 4, "progress")
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    # Then one worker process alone (the OOM killer's way): it is replaced in the same run.
    job = _job(url, study_name, "process", n_splits)
    before = {t.number for t in _trials(url, study_name)}

    def a_running_trial():
        return [
            t for t in _trials(url, study_name)
            if t.number not in before and t.state == TrialState.RUNNING
            and len(t.intermediate_values) >= 2
        ]  # fmt: skip

    _wait(job, lambda: bool(a_running_trial()), "a running split")
    victim = a_running_trial()[0]
    worker_pid = int(victim.user_attrs["worker"].split(":")[1])
    assert worker_pid != job.pid
    os.kill(worker_pid, signal.SIGKILL)
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0 and "DONE" in out, out[-3000:]
    assert "died with exit code -9" in out and "in its place" in out

    study = optuna_mto.load_study(study_name=study_name, storage=url)
    summary = study.summary()
    assert summary.complete and summary.states == ["complete"] * n_splits
    statuses = split_statuses(study._rt)
    assert all(s.errors == 0 for s in statuses)  # kills never count as errors
    assert sum(s.preemptions for s in statuses) >= 4
    victim_status = statuses[victim.params["split"]]
    assert victim_status.preemptions >= 1
    # Dead workers on this host are taken over at once (their process is gone), not
    # after the heartbeat grace of 60 s (default 30 s heartbeat): the fast path's reason.
    lost = [t for t in _trials(url, study_name) if t.state == TrialState.FAIL]
    assert len(lost) >= 4
    assert all(t.system_attrs["fail_reason"].startswith("worker lost: process") for t in lost)
    print(f"time from restart to a split training again: {[round(s, 1) for s in takeover_s]}")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_two_quick_ctrl_c_leave_nothing_running_and_spend_no_retry(tmp_path, study_name, executor):
    url = f"sqlite:///{tmp_path / 'ctrlc.db'}"
    job = _job(url, study_name, executor, 2)
    _wait(
        job,
        lambda: sum(bool(t.intermediate_values) for t in _trials(url, study_name)) == 2,
        "both splits training",
    )
    job.send_signal(signal.SIGINT)
    time.sleep(0.05)
    job.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C right away
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 130 and "STOPPED" in out, out
    assert "Traceback" not in out and "terminate called" not in out, out
    assert "interrupted: 2 split(s) will resume" in out, out
    states = [t.state for t in _trials(url, study_name)]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2
    study = optuna_mto.load_study(study_name=study_name, storage=url, max_retries=0)
    statuses = split_statuses(study._rt)
    assert [s.state for s in statuses] == ["failed", "failed"]  # claimable at once
    assert all(s.errors == 0 and s.preemptions == 0 and s.interruptions == 1 for s in statuses)

    rerun = _job(url, study_name, "thread", 2)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "DONE" in out, out[-3000:]
    assert study.summary().complete
    resumed = [t for t in _trials(url, study_name) if t.state == TrialState.COMPLETE]
    assert all(t.system_attrs["mto:resumed_from_step"] >= 0 for t in resumed)


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_failing_split_is_named_with_its_error_in_every_executor(study_name, digits, executor):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, max_retries=1)
    broken = FailOnSplit(digits_trainer(x, y, epochs=2), split=1)
    n_jobs, mode = (1, "auto") if executor == "inline" else (2, executor)
    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(broken, n_jobs=n_jobs, executor=mode)  # retried once in the same call
    message = str(info.value)
    assert "1 of 2 split(s) given up" in message
    assert "split 1 (trial" in message and "attempt 1" in message
    assert "RuntimeError: split 1 is broken" in message and "max_retries=1" in message
    trials = study.study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.params["split"] == 1 for t in failed)
    assert all(t.system_attrs["fail_reason"] == "RuntimeError: split 1 is broken" for t in failed)

    summary = study.summary()
    assert summary.states == ["complete", "given up"] and not summary.complete
    table = summary.to_table()
    assert "INCOMPLETE: split 1 given up" in table
    unranked = [row.split() for row in table.splitlines() if row.lstrip().startswith("- ")]
    assert unranked == [["-", "1", "-", *["-"] * 4, "0/0", "-", "2/0", "given", "up"]]
    assert "err/lost: attempts that raised" in table
    with pytest.raises(optuna_mto.MTOError, match="incomplete.*allow_incomplete=True"):
        study.export_best_model("never.pt")
    with pytest.raises(optuna_mto.MTOError, match="incomplete.*ensemble would miss.*splits="):
        study.export_ensemble("never.pt")
    assert not os.path.exists("never.pt")
    state = study.best_state_dict(allow_incomplete=True)
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    # Rerunning without a fix says the same, loudly, instead of "nothing to do".
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="split 1"):
        study.optimize(broken)
    # A higher budget runs it again; fixed, the study completes.
    fixed = FailOnSplit(digits_trainer(x, y, epochs=2), split=-1)
    optuna_mto.load_study(study_name=study_name, max_retries=3).optimize(fixed)
    assert study.summary().complete


def test_cli_summary_of_an_incomplete_study_exits_non_zero(tmp_path, study_name, digits):
    x, y = digits
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    study = optuna_mto.create_study(study_name=study_name, storage=url, n_splits=2, max_retries=0)
    with pytest.raises(optuna_mto.SplitsGivenUpError):
        study.optimize(FailOnSplit(digits_trainer(x, y, epochs=2), split=0))
    cmd = ["summary", "--storage", url, "--study", study_name]
    proc = subprocess.run(
        [sys.executable, "-m", "optuna_mto.cli", *cmd],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "INCOMPLETE: split 0 given up" in proc.stdout
    assert "state" in proc.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_restart_mid_run_loses_nothing(study_name):
    url = postgres_url()
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if shutil.which("pg_ctlcluster") is None or not clusters or os.geteuid() != 0:
        pytest.skip("restarting the server needs pg_ctlcluster, run as root")
    version = clusters[0]
    started_before = _postmaster_started(url)
    job = _job(url, study_name, "thread", 2, epoch_s=1.0)  # ~8 s of training left at restart
    try:
        _wait(job, lambda: _steps(url, study_name) >= 4, "progress")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True, timeout=120, capture_output=True,
        )  # fmt: skip
        running_after_restart = job.poll() is None
        steps_at_restart = _steps(url, study_name)
        out, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], timeout=30)
        if ready.returncode != 0:  # never leave the server down for the tests after this one
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                timeout=120,
            )  # fmt: skip
    assert job.returncode == 0 and "DONE" in out, out[-3000:]
    # The server really restarted while the job was training, and training went on after
    # it on new connections. (Whether a worker's query hit the down window, and logged
    # "failed transiently", depends on timing: pooled connections are pinged first.)
    assert _postmaster_started(url) > started_before
    assert running_after_restart and _steps(url, study_name) > steps_at_restart
    trials = _trials(url, study_name)
    assert sorted(t.params["split"] for t in trials if t.state == TrialState.COMPLETE) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]


def _postmaster_started(url: str):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_postmaster_start_time()").scalar_one()
    finally:
        engine.dispose()


def test_a_full_disk_gives_a_clear_error_and_no_corrupt_checkpoint(tmp_path, study_name, digits):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    artifacts = tmp_path / "home" / "artifacts"
    artifacts.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(artifacts)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        x, y = digits

        def wide_mlp() -> torch.nn.Module:  # ~150 kB of weights, ~450 kB with Adam's state
            return torch.nn.Sequential(
                torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
            )

        trainer = optuna_mto.SupervisedTrainer(wide_mlp, (x, y), epochs=4, batch_size=256)
        study = optuna_mto.create_study(study_name=study_name, n_splits=2, max_retries=0)
        with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
            # One split at a time: the first publishes a whole checkpoint before the disk
            # fills (two splits writing at once may both fail at their first save).
            study.optimize(trainer, executor="thread", n_jobs=1)
        message = str(info.value)
        assert "CheckpointError: Could not write artifact" in message
        assert "No space left on device" in message and str(artifacts) in message
        leftovers = [p.name for p in (artifacts / study_name).iterdir() if p.name.endswith(".tmp")]
        assert not leftovers  # nothing partial kept
        # Every checkpoint any split published is whole: it loads and passes its sha256.
        store = study.checkpoint_store
        refs = [
            ref
            for r in study.records().values()
            for ref in (r.checkpoint, r.previous_checkpoint, r.best_checkpoint)
            if ref is not None
        ]
        assert refs
        for ref in refs:
            assert store.load(ref)["model"]
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)


class _TakenOverOnce:
    """A trainer whose split 0 finds its trial failed by another worker after one report.

    What ``fail_stale_trials`` does to a worker whose heartbeat went stale (it could not
    reach the storage) while it still trains.
    """

    def __init__(self, trainer: optuna_mto.SupervisedTrainer) -> None:
        self.trainer = trainer
        self.dataset, self.evaluate = trainer.dataset, trainer.evaluate

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        if trial.split == 0 and trial.attempt == 0:
            report = trial.report

            def report_then_lose(value, step, **kwargs):
                result = report(value, step, **kwargs)
                optuna_trial = trial.optuna_trial
                optuna_trial.study._storage.set_trial_state_values(
                    optuna_trial._trial_id, TrialState.FAIL
                )
                return result

            trial.report = report_then_lose
        self.trainer(trial)


def test_a_worker_whose_trial_was_taken_over_gives_it_up(digits, storage_url, study_name):
    """Its next write fails; that is neither an error of the user's code nor a crash."""
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, max_retries=0
    )
    study.optimize(_TakenOverOnce(digits_trainer(*digits, epochs=2)))
    statuses = split_statuses(study._rt)
    assert [s.state for s in statuses] == ["complete", "complete"]
    assert statuses[0].errors == 0 and statuses[0].preemptions == 1
