"""Cluster recipes (examples/deploy/): ``--device auto``, the SLURM array, Kubernetes.

The SLURM script runs for real under ``bash`` with the variables SLURM sets, and the
Kubernetes Job's init and worker commands run as the kubelet would start them (with
``$(VAR)`` expanded), both against SQLite (and PostgreSQL when configured).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import torch
import yaml
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.schema import SPLIT_KEY
from optuna_mto._workers.device_env import auto_devices, device_from_environment

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "examples" / "deploy"
SLURM = DEPLOY / "slurm_array.sh"
TESTS = Path(__file__).parent
#: A module-level trainer of 6 short epochs (tests/_models.py).
OBJECTIVE = "_models:worker_trainer"


# --device auto ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "n_gpus", "device", "variable"),
    [
        ({"LOCAL_RANK": "3"}, 4, "cuda:3", "LOCAL_RANK=3"),
        ({"LOCAL_RANK": "1", "SLURM_LOCALID": "0"}, 4, "cuda:1", "LOCAL_RANK=1"),  # torchrun
        ({"SLURM_LOCALID": "1", "SLURM_ARRAY_TASK_ID": "6"}, 2, "cuda:1", "SLURM_LOCALID=1"),
        ({"SLURM_LOCALID": "0", "SLURM_ARRAY_TASK_ID": "6"}, 1, "cuda:0", "SLURM_LOCALID=0"),
        ({"SLURM_LOCALID": "5"}, 4, "cuda:1", "SLURM_LOCALID=5"),  # more tasks than GPUs
        ({"SLURM_LOCALID": "1"}, 0, "cpu", "SLURM_LOCALID=1"),
        ({"JOB_COMPLETION_INDEX": "7"}, 1, "cuda:0", "JOB_COMPLETION_INDEX=7"),
        ({"JOB_COMPLETION_INDEX": "7"}, 2, "cuda:0", "JOB_COMPLETION_INDEX=7"),  # pod index
        ({"JOB_COMPLETION_INDEX": "3"}, 0, "cpu", "JOB_COMPLETION_INDEX=3"),
        ({"LOCAL_RANK": " ", "SLURM_LOCALID": "1"}, 2, "cuda:1", "SLURM_LOCALID=1"),
        ({}, 4, "cuda:0", None),
        ({"SLURM_ARRAY_TASK_ID": "3"}, 0, "cpu", None),  # a global index is not read
    ],
)
def test_device_from_environment(env, n_gpus, device, variable):
    choice = device_from_environment(env, n_gpus)
    assert (choice.device, choice.variable) == (device, variable)
    assert choice.reason.startswith(f"{device} (")
    if variable is not None:
        assert variable in choice.reason
    else:
        assert "none of LOCAL_RANK, SLURM_LOCALID, JOB_COMPLETION_INDEX is set" in choice.reason


def test_device_from_environment_says_why():
    assert "shared" in device_from_environment({"SLURM_LOCALID": "5"}, 4).reason
    assert "pod index" in device_from_environment({"JOB_COMPLETION_INDEX": "2"}, 1).reason
    assert "no visible CUDA GPUs" in device_from_environment({"LOCAL_RANK": "0"}, 0).reason
    assert (
        "from torchrun, 1 visible CUDA GPU)"
        in device_from_environment({"LOCAL_RANK": "0"}, 1).reason
    )


@pytest.mark.parametrize("value", ["x", "-1", "1.0", "²"])
def test_a_malformed_variable_is_refused_by_name(value):
    with pytest.raises(ValueError, match=rf"SLURM_LOCALID={re.escape(repr(value))}"):
        device_from_environment({"SLURM_LOCALID": value}, 1)
    with pytest.raises(ValueError, match="n_gpus"):
        device_from_environment({}, -1)


@pytest.fixture
def optuna_records():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger("optuna")
    root.addHandler(handler)
    yield records
    root.removeHandler(handler)


def test_auto_devices_logs_the_choice(monkeypatch, optuna_records):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert auto_devices(1, {"SLURM_LOCALID": "2"}) == ["cuda:2"]
    assert auto_devices(2, {"LOCAL_RANK": "1"}) == ["cuda:1"]  # both jobs on rank 1's GPU
    assert auto_devices(1, {}) is None  # the default placement: cuda:0 for one job
    assert auto_devices(3, {}) is None  # jobs spread over the GPUs as without --device
    lines = [r.getMessage() for r in optuna_records]
    assert lines[0] == "--device auto: cuda:2 (SLURM_LOCALID=2 from SLURM, 4 visible CUDA GPUs)"
    assert lines[1].startswith("--device auto: cuda:1 (LOCAL_RANK=1 from torchrun")
    assert lines[2].startswith("--device auto: cuda:0 (none of LOCAL_RANK")
    assert lines[3] == "--device auto: no scheduler variable; 3 jobs on cuda:0 to cuda:3 in turn"


def test_worker_help_documents_auto(capsys):
    from optuna_mto.cli import main

    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("auto", "LOCAL_RANK", "SLURM_LOCALID", "JOB_COMPLETION_INDEX"):
        assert name in help_text


# The recipes' text --------------------------------------------------------------------------


def _slurm_worker_args() -> list[str]:
    """The ``optuna-mto worker`` line the SLURM script runs, as words (unexpanded)."""
    text = SLURM.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("exec optuna-mto"))
    words = shlex.split(line, posix=False)
    assert words[:2] == ["exec", "optuna-mto"], words
    return words[2:]


def _create_code(text: str) -> str:
    """The ``python -c '...'`` create step of a recipe, whitespace normalised."""
    match = re.search(r"python -c '(.*?)'", text, re.DOTALL)
    assert match is not None
    return " ".join(match.group(1).split())


def _manifests(name: str) -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {d["kind"]: d for d in docs}


def _sbatch_options() -> dict[str, str]:
    lines = SLURM.read_text().splitlines()
    options = [ln for ln in lines if ln.startswith("#SBATCH")]
    # sbatch reads #SBATCH lines only before the first command.
    last = max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    assert all(not ln.strip() or ln.startswith("#") for ln in lines[: last + 1])
    found = {}
    for ln in options:
        name, _, value = ln.split(None, 1)[1].lstrip("-").partition("=")
        found[name] = value  # "" for a flag such as --requeue
    return found


def test_the_slurm_script_is_a_job_array_with_one_gpu_per_worker():
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    assert os.access(SLURM, os.X_OK)
    options = _sbatch_options()
    assert options["gpus-per-task"] == "1" and options["ntasks"] == "1"
    first, last = (int(n) for n in options["array"].split("-"))
    default_splits = re.search(r'N_SPLITS="\$\{N_SPLITS:-(\d+)\}"', SLURM.read_text())
    assert default_splits is not None and (first, last) == (0, int(default_splits[1]) - 1)
    assert "%A_%a" in options["output"] and "error" not in options  # one log per task
    assert _slurm_worker_args() == [
        "worker", "--storage", '"$OPTUNA_STORAGE"', "--study-name", '"$STUDY_NAME"',
        "--objective", '"$OBJECTIVE"', "--device", "auto",
    ]  # fmt: skip


def test_the_kubernetes_manifests():
    db = _manifests("postgres.yaml")
    work = _manifests("job.yaml")
    secret, service, postgres = db["Secret"], db["Service"], db["StatefulSet"]
    config, job = work["ConfigMap"], work["Job"]

    # The database: a Service in front of the StatefulSet, named by the storage URL.
    labels = postgres["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert postgres["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    [port] = service["spec"]["ports"]
    pg = postgres["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["containerPort"] for p in pg["ports"]]
    values = secret["stringData"]
    url = sa.make_url(values["OPTUNA_STORAGE"])
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == (service["metadata"]["name"], port["port"])
    assert (url.username, url.password, url.database) == (
        values["POSTGRES_USER"], values["POSTGRES_PASSWORD"], values["POSTGRES_DB"],
    )  # fmt: skip
    for var in pg["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in values

    # The workers: an Indexed Job, one pod per split, one GPU per pod.
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n_splits = int(config["data"]["N_SPLITS"])
    assert spec["completions"] == spec["parallelism"] == n_splits
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    [init] = pod["initContainers"]
    [worker] = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    for container in (init, worker):
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        [storage] = container["env"]
        assert storage["name"] == "OPTUNA_STORAGE"
        assert storage["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"], "key": "OPTUNA_STORAGE"
        }  # fmt: skip
    # The SLURM script's worker line, with Kubernetes' $(VAR) for the shell's "$VAR".
    slurm = [re.sub(r'^"\$(\w+)"$', r"$(\1)", word) for word in _slurm_worker_args()]
    assert worker["command"] == ["optuna-mto", *slurm]
    assert init["command"][:2] == ["sh", "-c"]
    assert _create_code(init["command"][2]) == _create_code(SLURM.read_text())
    assert "load_if_exists=True" in _create_code(SLURM.read_text())


# Running them ------------------------------------------------------------------------------


def _env(url: str, study_name: str, n_splits: int, **scheduler: str) -> dict[str, str]:
    """A clean environment as the scheduler would start a task, on this venv's tools."""
    scheduler_set = ("SLURM_", "OPTUNA_STORAGE", "LOCAL_RANK", "JOB_COMPLETION_INDEX")
    env = {k: v for k, v in os.environ.items() if not k.startswith(scheduler_set)}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(TESTS),
        CUDA_VISIBLE_DEVICES="",  # the same outcome (cpu) on any machine
        OPTUNA_STORAGE=url,
        STUDY_NAME=study_name,
        N_SPLITS=str(n_splits),
        OBJECTIVE=OBJECTIVE,
        **scheduler,
    )
    return env


def _check_complete(url: str, study_name: str, n_splits: int) -> None:
    study = optuna_mto.load_study(study_name=study_name, storage=url)
    trials = study.study.get_trials()
    assert sorted(t.system_attrs[SPLIT_KEY] for t in trials) == list(range(n_splits))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert study.summary().complete


@pytest.mark.slow
def test_the_slurm_script_runs_two_array_tasks_to_completion(storage_url, study_name, tmp_path):
    n_splits = 2
    tasks = [
        subprocess.Popen(
            ["bash", str(SLURM)],
            env=_env(
                storage_url,
                study_name,
                n_splits,
                SLURM_JOB_ID=str(1000 + task),
                SLURM_ARRAY_JOB_ID="1000",
                SLURM_ARRAY_TASK_ID=str(task),
                SLURM_LOCALID="0",
                SLURM_PROCID="0",
                SLURM_NODEID="0",
            ),  # fmt: skip
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for task in range(2)
    ]
    outs = [task.communicate(timeout=400)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outs
    for task, out in enumerate(outs):
        assert f"job {1000 + task} task {task} on " in out
        assert "--device auto: cpu (SLURM_LOCALID=0 from SLURM; no visible CUDA GPUs)" in out
        assert f"worker done; {n_splits}/{n_splits} splits of {study_name!r} complete" in out
    ran = re.findall(r"runs split (\d) \(attempt 0\) on cpu", "".join(outs))
    assert sorted(ran) == ["0", "1"]  # each split once, on the device auto chose
    _check_complete(storage_url, study_name, n_splits)


@pytest.mark.slow
def test_the_kubernetes_pod_commands_run_as_the_kubelet_starts_them(study_name, tmp_path):
    job = _manifests("job.yaml")["Job"]
    pod = job["spec"]["template"]["spec"]
    url = f"sqlite:///{tmp_path / 'k8s.db'}"
    env = _env(url, study_name, 1, JOB_COMPLETION_INDEX="0")

    def expand(command: list[str]) -> list[str]:
        return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], word) for word in command]

    init = subprocess.run(expand(pod["initContainers"][0]["command"]), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert init.returncode == 0, init.stderr
    worker = subprocess.run(expand(pod["containers"][0]["command"]), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert (
        "--device auto: cpu (JOB_COMPLETION_INDEX=0 from Kubernetes Indexed Job; "
        "no visible CUDA GPUs)" in worker.stderr
    )
    _check_complete(url, study_name, 1)
