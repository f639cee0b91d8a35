"""Cost of sharing weights: checkpoint publish and donor pull per report, per store.

    python benchmarks/checkpoints.py [--postgres postgresql+psycopg://postgres@127.0.0.1/test]

For an MLP of about 1M and one of about 25M parameters (with Adam state, as a real
checkpoint carries), measures on this machine, side by side:
  publish = capture model + optimizer state, write the checkpoint, publish the record
  pull    = read the K records, load the donor's checkpoint (sha256-checked), apply it
per artifact store (file system; database inside SQLite; database inside PostgreSQL
when --postgres is given), and divides each by the time of one training epoch of the
same model on 3,200 MNIST digits: the share of an epoch that a report costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mnist import load_mnist  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto._step.board import SplitRecord  # noqa: E402
from optuna_mto._step.state import apply_state, capture_state  # noqa: E402

SIZES = {"1M": [784, 1024, 256, 10], "25M": [784, 4096, 4096, 1024, 10]}


def mlp(widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def epoch_seconds(model: nn.Module, optimizer: torch.optim.Optimizer, x, y) -> float:
    start = time.perf_counter()
    for batch in torch.randperm(len(x)).split(64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(study: optuna_mto.MTOStudy, model, optimizer, repeats: int) -> tuple[float, float]:
    store, board = study.checkpoint_store, study._board
    publish, pull = [], []
    for step in range(repeats):
        start = time.perf_counter()
        state = capture_state(model, optimizer)
        state.update(step=step, fitness=0.5)
        ref = store.save(state, name=f"bench-s{step}")
        board.publish(SplitRecord(0, 0, 0, step, 0.5, ref, None, 0.5, step, ref))
        publish.append(time.perf_counter() - start)
        start = time.perf_counter()
        record = board.read()[0]
        donor = store.load(record.checkpoint, map_location="cpu")
        apply_state(donor, model, optimizer)
        pull.append(time.perf_counter() - start)
        store.remove(ref.artifact_id)
    return min(publish), min(pull)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("OPTUNA_MTO_TEST_POSTGRES_URL"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (x, y), _ = load_mnist()
    x, y = x[:3200], y[:3200]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPTUNA_MTO_HOME"] = tmp
        stores = [("file", f"sqlite:///{tmp}/f.db", "file"),
                  ("database (SQLite)", f"sqlite:///{tmp}/d.db", "database")]  # fmt: skip
        if args.postgres:
            stores.append(("database (PostgreSQL)", args.postgres, "database"))
        for size, widths in SIZES.items():
            torch.manual_seed(0)
            model = mlp(widths)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            n_params = sum(p.numel() for p in model.parameters())
            epoch = epoch_seconds(model, optimizer, x, y)  # also fills the Adam state
            for label, url, kind in stores:
                study = optuna_mto.create_study(
                    storage=url, n_splits=2, artifact_store=kind, heartbeat_interval=None
                )
                publish, pull = measure(study, model, optimizer, args.repeats)
                rows.append((size, n_params, label, publish, pull, epoch))
                if url.startswith("postgresql"):
                    optuna.delete_study(study_name=study.study_name, storage=study.study._storage)
    print(f"{'model':<6}{'params':>12}  {'store':<22}{'publish s':>10}{'pull s':>9}"
          f"{'epoch s':>9}{'(pub+pull)/epoch':>18}")  # fmt: skip
    for size, n, label, publish, pull, epoch in rows:
        print(f"{size:<6}{n:>12,}  {label:<22}{publish:10.3f}{pull:9.3f}{epoch:9.2f}"
              f"{(publish + pull) / epoch:18.3f}")  # fmt: skip
    print(f"(best of {args.repeats}; checkpoints hold weights + Adam state, about 12 bytes/param)")


if __name__ == "__main__":
    main()
