"""Logging the Optuna way: verbosity, no basicConfig, records forwarded from processes."""

from __future__ import annotations

import logging
import subprocess
import sys

import optuna
import pytest
from _models import digits_trainer

import optuna_mto
from optuna_mto._logging import LOGGER_ROOT, get_logger
from optuna_mto.transfer import NoTransfer


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def optuna_records():
    handler = ListHandler()
    root = logging.getLogger("optuna")
    root.addHandler(handler)
    verbosity = optuna.logging.get_verbosity()
    yield handler.records
    root.removeHandler(handler)
    optuna.logging.set_verbosity(verbosity)


def test_library_loggers_live_under_optuna():
    assert get_logger("optuna_mto._workers.worker").name == f"{LOGGER_ROOT}._workers.worker"
    assert get_logger("optuna_mto._workers.worker").parent.name in ("optuna", LOGGER_ROOT)


def test_set_verbosity_silences_and_restores_optuna_mto_logs(study_name, digits, optuna_records):
    x, y = digits
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = optuna_mto.create_study(study_name=study_name, n_splits=1, transfer=NoTransfer())
    quiet.optimize(digits_trainer(x, y, epochs=1), dashboard=False)
    assert not [r for r in optuna_records if r.name.startswith(LOGGER_ROOT)]
    optuna.logging.set_verbosity(optuna.logging.INFO)
    loud = optuna_mto.create_study(study_name=study_name + "b", n_splits=1, transfer=NoTransfer())
    loud.optimize(digits_trainer(x, y, epochs=1), dashboard=False)
    assert any("runs split 0" in r.getMessage() for r in optuna_records)


def test_process_workers_forward_their_records_to_the_parent(study_name, digits, optuna_records):
    x, y = digits
    optuna.logging.set_verbosity(optuna.logging.INFO)
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())
    study.optimize(digits_trainer(x, y, epochs=1), n_jobs=2, executor="process", dashboard=False)
    forwarded = [
        r
        for r in optuna_records
        if "runs split" in r.getMessage() and r.processName != "MainProcess"
    ]
    assert sorted(r.getMessage().split("runs split ")[1][0] for r in forwarded) == ["0", "1"]


def test_the_command_line_configures_no_root_logging(tmp_path):
    code = (
        "import logging, sys; from optuna_mto import cli; "
        f"cli.main(['summary', '--study', 'nope', '--storage', 'sqlite:///{tmp_path}/x.db']); "
        "print('root handlers', len(logging.getLogger().handlers))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "root handlers 0" in out.stdout
    assert "so no study there" in out.stderr  # a read-only command creates no database
