"""A database out of connection slots: workers are refused, no split runs twice (issue 21)."""

from __future__ import annotations

import collections
import logging

import optuna
import pytest
import sqlalchemy as sa
import torch
from conftest import postgres_url
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._retry import connection_limit_hint
from optuna_mto._schema import SPLIT_KEY

ROLE = "mto_test_limited"


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))


def _limited_url(admin_url: str, limit: int) -> str:
    """A login role that PostgreSQL lets hold ``limit`` connections at most."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(sa.text(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"))
        verb = "ALTER" if exists.first() else "CREATE"
        conn.exec_driver_sql(f"{verb} ROLE {ROLE} LOGIN CONNECTION LIMIT {limit}")
        db = conn.execute(sa.text("SELECT current_database()")).scalar()
        for grant in (f'DATABASE "{db}"', "SCHEMA public", "ALL TABLES IN SCHEMA public",
                      "ALL SEQUENCES IN SCHEMA public"):  # fmt: skip
            conn.exec_driver_sql(f"GRANT ALL ON {grant} TO {ROLE}")
    engine.dispose()
    return sa.make_url(admin_url).set(username=ROLE).render_as_string(hide_password=False)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_refusal_is_recognised_through_optunas_wrapping() -> None:
    driver = RuntimeError("FATAL:  sorry, too many clients already")
    wrapped = sa.exc.OperationalError("SELECT 1", {}, driver)
    try:
        try:
            raise wrapped
        except sa.exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised") from err
    except optuna.exceptions.StorageInternalError as outer:
        hint = connection_limit_hint(outer)
    assert hint is not None and "max_connections" in hint and "PgBouncer" in hint
    assert connection_limit_hint(RuntimeError("connection refused")) is None


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_beyond_the_connection_limit_never_train_a_split_twice(digits, study_name):
    """6 worker processes, a role allowed 5 connections: some are refused, none duplicates."""
    url = _limited_url(postgres_url(), limit=5)
    n_splits = 12
    trainer = optuna_mto.SupervisedTrainer(_mlp, digits, epochs=2, batch_size=128)
    study = optuna_mto.create_study(study_name=study_name, storage=url, n_splits=n_splits)
    lines = _Lines()
    logging.getLogger("optuna").addHandler(lines)
    try:
        study.optimize(trainer, n_jobs=6, executor="process")
    finally:
        logging.getLogger("optuna").removeHandler(lines)
    trials = study.study.get_trials()
    complete = collections.Counter(
        t.system_attrs[SPLIT_KEY] for t in trials if t.state == TrialState.COMPLETE
    )
    assert complete == {split: 1 for split in range(n_splits)}
    refused = [line for line in lines.lines if "could not open the study and exits" in line]
    limit_seen = [line for line in lines.lines if "too many connections" in line.lower()]
    assert refused or limit_seen  # the limit was hit
    assert all("max_connections" in line for line in refused)
