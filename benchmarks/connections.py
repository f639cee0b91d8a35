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

    # how it grows: one study per worker count, a JSON and a PNG figure under results/
    python benchmarks/connections.py --postgres ... --sweep 8 16 32 64 96 --role-limit 99

Printed: workers, splits, the server's max_connections (or the role's limit), the peak
of connections seen (and per worker), workers refused, splits COMPLETE once / twice or
more / never, the latency of ``trial.report`` (p50 and p99 over every report of every
worker: the storage writes, the board's publish, the checkpoint and the transfer look),
reports per second over the run, database transactions per report (from
``pg_stat_database``; the server counts every worker's commits and rollbacks, so other
clients of the same database add to it) and the wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import torch
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.schema import SPLIT_KEY, claims_table

ROLE = "mto_limited"
RESULTS = Path(__file__).resolve().parent / "results"
#: User attribute in which each split records its reports' latencies (ms).
LATENCY_ATTR = "bench_report_ms"


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


class _TimedTrainer(optuna_mto.SupervisedTrainer):
    """The SupervisedTrainer, timing each ``trial.report`` call of its split."""

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        report, times = trial.report, []

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return report(*args, **kwargs)
            finally:
                times.append(1000 * (time.perf_counter() - start))

        trial.report = timed  # type: ignore[method-assign]
        try:
            super().__call__(trial)
        finally:
            trial.set_user_attr(LATENCY_ATTR, [round(t, 2) for t in times])


def _transactions(engine: sa.Engine) -> int:
    """Commits and rollbacks of the current database so far (all clients)."""
    query = sa.text(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


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
    trainer = _TimedTrainer(_mlp, (x, y), epochs=epochs, optimizer_fn=_adam, batch_size=64)
    name = f"connections-{uuid.uuid4().hex[:8]}"
    study = optuna_mto.create_study(
        study_name=name, storage=url, n_splits=splits, validation_fraction=0.5
    )
    counter = _Count()
    logging.getLogger("optuna").addHandler(counter)
    peak = _Peak(admin_url)
    peak.start()
    started, transactions = time.monotonic(), _transactions(engine)
    error = ""
    try:
        study.optimize(trainer, n_jobs=workers, executor="process")
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    wall = time.monotonic() - started
    transactions = _transactions(engine) - transactions
    peak.done.set()
    peak.join()
    trials = study.study.get_trials(deepcopy=False)
    complete = collections.Counter(
        t.system_attrs[SPLIT_KEY] for t in trials if t.state == TrialState.COMPLETE
    )
    latencies = np.array([ms for t in trials for ms in t.user_attrs.get(LATENCY_ATTR, [])])
    reports = len(latencies)
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
        "peak_per_worker": round(peak.peak / workers, 2),
        "workers_refused": counter.refused,
        "complete_once": sum(1 for s in range(splits) if complete[s] == 1),
        "complete_twice_or_more": sum(1 for s in range(splits) if complete[s] > 1),
        "never_complete": sum(1 for s in range(splits) if complete[s] == 0),
        "claim_rows": rows,
        "reports": reports,
        "report_p50_ms": round(float(np.percentile(latencies, 50)), 1) if reports else None,
        "report_p99_ms": round(float(np.percentile(latencies, 99)), 1) if reports else None,
        "reports_per_s": round(reports / wall, 1),
        "transactions_per_report": round(transactions / reports, 1) if reports else None,
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
    parser.add_argument(
        "--sweep", type=int, nargs="+", default=None,
        help="worker counts to run one after another (splits = workers); writes "
        "results/connections.json and results/connections.png",
    )  # fmt: skip
    args = parser.parse_args()
    if args.sweep:
        rows = []
        for n in args.sweep:
            rows.append(run(args.postgres, n, n, args.epochs, args.role_limit))
            print(json.dumps(rows[-1]), flush=True)
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "connections.json").write_text(json.dumps(rows, indent=1))
        plot_sweep(rows, RESULTS / "connections.png")
        print(sweep_table(rows))
        return
    result = run(args.postgres, args.workers, args.splits or args.workers, args.epochs,
                 args.role_limit)  # fmt: skip
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


def sweep_table(rows: list[dict]) -> str:
    """A Markdown table of a sweep's runs, one row per worker count."""
    lines = [
        "| workers | peak conn. | per worker | refused | COMPLETE once / twice / never "
        "| report p50 / p99 (ms) | reports/s | transactions/report | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['peak_connections']} | {r['peak_per_worker']} "
            f"| {r['workers_refused']} | {r['complete_once']} / {r['complete_twice_or_more']} "
            f"/ {r['never_complete']} | {r['report_p50_ms']} / {r['report_p99_ms']} "
            f"| {r['reports_per_s']} | {r['transactions_per_report']} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: Path) -> None:
    """Three panels against the number of workers: peak connections, p50/p99, reports/s."""
    from PIL import Image, ImageDraw

    panels = [
        ("peak connections", [("peak", "peak_connections", (31, 78, 121))]),
        ("report latency (ms)", [("p50", "report_p50_ms", (40, 150, 70)),
                                 ("p99", "report_p99_ms", (200, 60, 40))]),
        ("reports per second", [("reports/s", "reports_per_s", (150, 80, 170))]),
    ]  # fmt: skip
    w, h, pad = 300, 240, 40
    image = Image.new("RGB", (w * len(panels), h), "white")
    draw = ImageDraw.Draw(image)
    xs = [r["workers"] for r in rows]
    x_max = max(xs)
    for i, (title, series) in enumerate(panels):
        left = i * w
        draw.text((left + pad, 8), title, fill="black")
        y_max = max((r[key] or 0) for _, key, _ in series for r in rows) or 1
        draw.line([(left + pad, h - pad), (left + w - 10, h - pad)], fill="black")
        draw.line([(left + pad, 25), (left + pad, h - pad)], fill="black")
        draw.text((left + 4, 25), f"{y_max:g}", fill="black")
        for x in xs:
            px = left + pad + (w - pad - 20) * x / x_max
            draw.text((px - 6, h - pad + 4), str(x), fill="black")
        draw.text((left + w // 2 - 20, h - 16), "workers", fill="black")
        for j, (label, key, color) in enumerate(series):
            points = [
                (left + pad + (w - pad - 20) * r["workers"] / x_max,
                 h - pad - (h - pad - 30) * (r[key] or 0) / y_max)
                for r in rows
            ]  # fmt: skip
            draw.line(points, fill=color, width=2)
            for px, py in points:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
            draw.text((left + w - 80, 25 + 12 * j), label, fill=color)
    image.save(path)


if __name__ == "__main__":
    main()
