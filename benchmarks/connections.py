"""Connections: many worker processes against one PostgreSQL, until it runs out of slots.

A study of K splits of sklearn digits (a small MLP, a few epochs) is optimized by N
worker processes on one machine, all against one PostgreSQL database, while a side
connection samples ``pg_stat_activity`` every 0.2 s. With N large enough the server
refuses connections ("too many clients"). What must hold however the storage
misbehaves: every split COMPLETE exactly once; a worker the server refused says why
(naming ``max_connections``) and exits; the study is never corrupted.

    python benchmarks/connections.py --postgres postgresql+psycopg://postgres@127.0.0.1/test \\
        --workers 80 --splits 80
    # emulate a small server on a shared one: a role allowed only 20 connections
    python benchmarks/connections.py --postgres ... --workers 16 --role-limit 20

Printed: workers, splits, the server's max_connections (or the role's limit), the peak
of connections seen, workers refused, splits COMPLETE once / twice or more / never,
and the wall time.
"""

from __future__ import annotations

import argparse
import collections
import logging
import threading
import time
import uuid

import sqlalchemy as sa
import torch
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._schema import SPLIT_KEY, claims_table

ROLE = "mto_limited"


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


def limited_url(admin_url: str, limit: int) -> str:
    """Create (or reset) a login role allowed ``limit`` connections; return its URL."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(sa.text(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"))
        verb = "ALTER" if exists.first() else "CREATE"
        conn.exec_driver_sql(f"{verb} ROLE {ROLE} LOGIN CONNECTION LIMIT {int(limit)}")
        db = conn.execute(sa.text("SELECT current_database()")).scalar()
        conn.exec_driver_sql(f'GRANT ALL ON DATABASE "{db}" TO {ROLE}')
        conn.exec_driver_sql(f"GRANT ALL ON SCHEMA public TO {ROLE}")
        conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {ROLE}")
        conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
    engine.dispose()
    return sa.make_url(admin_url).set(username=ROLE, password=None).render_as_string(False)


class _Peak(threading.Thread):
    """Samples the number of connections to the database until stopped."""

    def __init__(self, admin_url: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
        self.conn = self.engine.connect()  # opened first: it must not be refused later
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        while not self.done.wait(0.2):
            self.peak = max(self.peak, int(self.conn.execute(query).scalar() or 0))
            self.conn.commit()


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "could not open the study and exits" in record.getMessage():
            self.refused += 1


def run(admin_url: str, workers: int, splits: int, epochs: int, role_limit: int | None) -> dict:
    """Run one study; return what was measured."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    url = limited_url(admin_url, role_limit) if role_limit else admin_url
    engine = sa.create_engine(admin_url)
    with engine.connect() as conn:
        max_conn = int(conn.execute(sa.text("SHOW max_connections")).scalar())
    trainer = optuna_mto.SupervisedTrainer(
        _mlp, (x, y), epochs=epochs, optimizer_fn=_adam, batch_size=64
    )
    name = f"connections-{uuid.uuid4().hex[:8]}"
    study = optuna_mto.create_study(
        study_name=name, storage=url, n_splits=splits, validation_fraction=0.5
    )
    counter = _Count()
    logging.getLogger("optuna").addHandler(counter)
    peak = _Peak(admin_url)
    peak.start()
    started = time.monotonic()
    error = ""
    try:
        study.optimize(trainer, n_jobs=workers, executor="process")
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    wall = time.monotonic() - started
    peak.done.set()
    peak.join()
    complete = collections.Counter(
        t.system_attrs[SPLIT_KEY]
        for t in study.study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
    )
    with engine.connect() as conn:
        study_id = study.study._study_id
        rows = conn.execute(
            sa.select(sa.func.count()).where(claims_table.c.study_id == study_id)
        ).scalar()
    engine.dispose()
    return {
        "workers": workers,
        "splits": splits,
        "limit": role_limit or max_conn,
        "limit_kind": "role CONNECTION LIMIT" if role_limit else "max_connections",
        "peak_connections": peak.peak,
        "workers_refused": counter.refused,
        "complete_once": sum(1 for s in range(splits) if complete[s] == 1),
        "complete_twice_or_more": sum(1 for s in range(splits) if complete[s] > 1),
        "never_complete": sum(1 for s in range(splits) if complete[s] == 0),
        "claim_rows": rows,
        "wall_s": round(wall, 1),
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="an admin URL of the database")
    parser.add_argument("--workers", type=int, default=80)
    parser.add_argument("--splits", type=int, default=None, help="default: --workers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--role-limit", type=int, default=None)
    args = parser.parse_args()
    result = run(args.postgres, args.workers, args.splits or args.workers, args.epochs,
                 args.role_limit)  # fmt: skip
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
