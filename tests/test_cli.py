"""The optuna-mto command line on real studies, as separate processes."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _models import digits_trainer, tiny_mlp
from conftest import postgres_url
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.rdb import open_storage
from optuna_mto.transfer import GreedyTransfer

TESTS = Path(__file__).parent


def _env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    for key, value in changes.items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    return env


def _cli(
    *args: str,
    check: bool = True,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "optuna_mto.cli", *args],
        capture_output=True,
        text=True,
        env=_env() if env is None else env,
        timeout=timeout,
        cwd=cwd,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli")
    os.environ["OPTUNA_MTO_HOME"] = str(home / "home")
    try:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.tensor(data.data / 16.0, dtype=torch.float32)
        y = torch.tensor(data.target)
        url = f"sqlite:///{home / 'cli.db'}"
        study = optuna_mto.create_study(  # copies at every step: the log has transfers
            study_name="cli", storage=url, n_splits=3, transfer=GreedyTransfer()
        )
        study.optimize(digits_trainer(x, y, epochs=3))
        yield study, url, home
    finally:
        os.environ.pop("OPTUNA_MTO_HOME", None)


def test_help_for_every_command(capsys):
    from optuna_mto.cli import main

    for command in ("worker", "summary", "export", "transfers", "dashboard"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "--study" in out and "--storage" in out
    assert "worker" in _cli("--help").stdout


@pytest.mark.smoke
def test_summary_prints_the_ranked_table(finished, monkeypatch):
    study, url, home = finished
    monkeypatch.setenv("OPTUNA_MTO_HOME", str(home / "home"))
    out = _cli("summary", "--storage", url, "--study", "cli").stdout
    assert out.strip() == str(study.summary()).strip()


def test_export_writes_loadable_best_weights(finished, tmp_path, monkeypatch):
    study, url, home = finished
    monkeypatch.setenv("OPTUNA_MTO_HOME", str(home / "home"))
    target = tmp_path / "best.pt"
    out = _cli("export", "--storage", url, "--study", "cli", "-o", str(target), "--best").stdout
    assert f"split {study.summary().best_split}" in out
    model = tiny_mlp()
    model.load_state_dict(torch.load(target, weights_only=True))
    expected = study.best_state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not 0600


def test_export_ensemble_writes_all_k_models(finished, tmp_path, monkeypatch):
    study, url, home = finished
    monkeypatch.setenv("OPTUNA_MTO_HOME", str(home / "home"))
    target = tmp_path / "ens.pt"
    cmd = ("export", "--storage", url, "--study", "cli", "-o", str(target))  # the default
    out = _cli(*cmd).stdout
    ranking = study.summary().ranking
    assert f"exported the ensemble of 3 splits {ranking} (combine='softmax') to {target}" in out
    assert f"Ensemble.load({str(target)!r}, make_model)" in out  # the file knows its count
    ens = optuna_mto.Ensemble.load(target, tiny_mlp)
    x = torch.rand(4, 64)
    with torch.no_grad():
        assert torch.equal(ens.eval()(x), study.ensemble(tiny_mlp)(x))
    both = _cli(*cmd, "--ensemble", "--split", "0", check=False)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_transfers_as_table_and_csv(finished, monkeypatch):
    study, url, home = finished
    monkeypatch.setenv("OPTUNA_MTO_HOME", str(home / "home"))
    events = study.transfers()
    text = _cli("transfers", "--storage", url, "--study", "cli", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        assert int(row["step"]) == event.step and int(row["receiver"]) == event.receiver
        assert int(row["donor"]) == event.donor and row["accepted"] == str(event.accepted)
    table = _cli("transfers", "--storage", url, "--study", "cli").stdout
    assert table.splitlines()[0].split()[:3] == ["step", "receiver", "donor"]
    assert len(table.splitlines()) == max(len(events), 1) + (1 if events else 0)


def test_read_only_commands_create_no_database_and_name_where_they_looked(tmp_path):
    env = _env(OPTUNA_MTO_HOME=None, OPTUNA_STORAGE=None)
    for command in ("summary", "export -o best.pt"):
        proc = _cli(*command.split(), "--study-name", "bc", check=False, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        default = tmp_path / "storage" / "optuna_mto.db"
        assert f"No database at {default} (storage sqlite:///{default})" in proc.stderr
        assert "Traceback" not in proc.stderr
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'other.db'}"
    proc = _cli("summary", "--storage", url, "--study", "bc", check=False, env=env)
    assert proc.returncode == 2 and f"storage {url})" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file, no folder


def test_a_missing_study_names_the_storage_and_its_studies(finished):
    _, url, _ = finished
    proc = _cli("summary", "--storage", url, "--study-name", "bc-kill", check=False)
    assert proc.returncode == 2
    assert f"No study named 'bc-kill' in storage {url}; studies there: ['cli']." in proc.stderr


def test_optuna_storage_variable_and_study_name_as_in_optunas_cli(finished):
    study, url, _ = finished
    out = _cli("summary", "--study-name", "cli", env=_env(OPTUNA_STORAGE=url)).stdout
    assert out.strip() == str(study.summary()).strip()


def test_a_closed_pipe_ends_the_command_quietly(finished):
    # `optuna-mto transfers | head -1`: the reader is gone before the command writes.
    _, url, _ = finished
    proc = subprocess.Popen(
        [sys.executable, "-m", "optuna_mto.cli", "summary", "--storage", url, "--study", "cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_errors_are_one_clear_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url)  # a database without studies
    proc = _cli("summary", "--storage", url, "--study", "nope", check=False)
    assert proc.returncode == 2
    assert "No study named 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli(
        "worker", "--storage", url, "--study", "nope", "--objective", "nomodule", check=False
    )
    assert proc.returncode == 2 and "module:attribute" in proc.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_finish_one_study_on_postgres(study_name, tmp_path):
    url = postgres_url()
    study = optuna_mto.create_study(
        study_name=study_name, storage=url, n_splits=4, artifact_store="database",
        heartbeat_interval=2, transfer=GreedyTransfer(),  # copies: the processes exchange
    )  # fmt: skip
    args = ["worker", "--storage", url, "--study", study_name, "--objective",
            "_models:worker_trainer"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "optuna_mto.cli", *args]
    workers = [
        subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    trials = study.study.get_trials()
    assert len(trials) == 4  # no split ran twice
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"].rsplit(":", 1)[0] for t in trials}) == 2
    assert study.summary().complete
    assert study.config.artifact_store == {"kind": "database"}
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing on a shared disk
    assert study.transfers(), "the two processes never exchanged weights"
