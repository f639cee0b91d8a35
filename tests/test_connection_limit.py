"""A database out of connection slots: workers are refused, no split runs twice (issue 21)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import optuna
import pytest
import sqlalchemy as sa
import torch
from conftest import postgres_url

from optuna_mto._storage.retry import connection_limit_hint

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


_JOB = textwrap.dedent(
    """
    import collections, logging, sys
    import torch
    from sklearn.datasets import load_digits
    from optuna.trial import TrialState
    import optuna_mto
    from optuna_mto._storage.schema import SPLIT_KEY


    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 10))


    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())


    if __name__ == "__main__":
        url, name, n_splits = sys.argv[1], sys.argv[2], int(sys.argv[3])
        d = load_digits()
        data = (torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target))
        trainer = optuna_mto.SupervisedTrainer(mlp, data, epochs=2, batch_size=128)
        study = optuna_mto.create_study(study_name=name, storage=url, n_splits=n_splits)
        lines = Lines()
        logging.getLogger("optuna").addHandler(lines)
        study.optimize(trainer, n_jobs=6, executor="process")
        done = collections.Counter(t.system_attrs[SPLIT_KEY] for t in study.study.get_trials()
                                   if t.state == TrialState.COMPLETE)
        refused = [x for x in lines.lines if "could not open the study and exits" in x]
        limit = [x for x in lines.lines if "too many connections" in x.lower()]
        print("COMPLETE", sorted(done.items()))
        print("REFUSED", len(refused), all("max_connections" in x for x in refused))
        print("LIMIT", len(limit))
    """
)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_beyond_the_connection_limit_never_train_a_split_twice(study_name, tmp_path):
    """6 worker processes, a role allowed 5 connections: some are refused, none duplicates.

    Run in a fresh interpreter, as a user's script would be (its own fork server).
    """
    url = _limited_url(postgres_url(), limit=5)
    n_splits = 12
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    proc = subprocess.run(
        [sys.executable, str(script), url, study_name, str(n_splits)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert f"COMPLETE {[(s, 1) for s in range(n_splits)]}" in out, out + proc.stderr[-3000:]
    refused = re.search(r"REFUSED (\d+) (True|False)", out)
    limit = re.search(r"LIMIT (\d+)", out)
    assert refused and limit, out
    assert int(refused.group(1)) + int(limit.group(1)) > 0  # the limit was hit
    assert refused.group(2) == "True"  # every refusal names max_connections
