"""Does transfer help? Test accuracy of the chosen model, per training method, over seeds.

    python benchmarks/quality.py --dataset mnist  --seeds 5    # 5,000 real MNIST digits
    python benchmarks/quality.py --dataset digits --seeds 5    # sklearn's 1,797 digits
    python benchmarks/quality.py --dataset fragile --seeds 5   # digits, SGD lr 1.0: seeds stall

Methods (same model, same epochs, same data and held-out test set per seed):
  conventional  one split (80/20), the best-validation checkpoint
  independent   K splits without transfer, model chosen by mean cross-split validation
  greedy        K splits with greedy copy transfer, chosen the same way
  amto          K splits with the paper's adaptive MTO (explorers), chosen the same way
  pbt           K splits with greedy copy + learning-rate exploration, chosen the same way
The test set (1,000 rows for MNIST, 20% for digits) is never seen by any split.
Prints mean, standard deviation and worst test accuracy per method, the compute used
(training epochs incl. explorers, validation evaluations) and transfers kept/tried;
writes benchmarks/results/quality_<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.distributions import FloatDistribution
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mnist import load_mnist, make_cnn  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto import transfer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("conventional", "independent", "greedy", "amto", "pbt")


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-3)


def sgd_fragile(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1.0, momentum=0.9)


def load(dataset: str, seed: int):
    """Return (train (x, y), test (x, y), model_fn, optimizer_fn, default epochs)."""
    if dataset == "mnist":
        train, test = load_mnist(test_size=1000, seed=seed)
        return train, test, make_cnn, adam, 6
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(x)))
    test, train = order[: len(x) // 5], order[len(x) // 5 :]
    opt = sgd_fragile if dataset == "fragile" else adam
    return (x[train], y[train]), (x[test], y[test]), mlp, opt, 8


def manager(method: str, dataset: str):
    if method in ("conventional", "independent"):
        return transfer.NoTransfer()
    if method == "greedy":
        return transfer.GreedyTransfer()
    if method == "amto":
        return transfer.AdaptiveTransfer()
    high = 2.0 if dataset == "fragile" else 1e-2
    space = {"lr": FloatDistribution(high / 100, high, log=True)}
    return transfer.PBTTransfer(hyperparams=space)


def run(dataset: str, method: str, seed: int, epochs: int | None, k: int, home: Path) -> dict:
    (x, y), (x_test, y_test), model_fn, opt_fn, default_epochs = load(dataset, seed)
    epochs = epochs or default_epochs
    trainer = optuna_mto.SupervisedTrainer(
        model_fn, (x, y), optimizer_fn=opt_fn, epochs=epochs, batch_size=64, seed=seed
    )
    n_splits = 1 if method == "conventional" else k
    os.environ["OPTUNA_MTO_HOME"] = str(home)
    study = optuna_mto.create_study(
        study_name=f"{dataset}-{method}-{seed}",
        storage=f"sqlite:///{home / 'quality.db'}",
        n_splits=n_splits,
        seed=seed,
        transfer=manager(method, dataset),
        heartbeat_interval=None,
    )
    start = time.perf_counter()
    study.optimize(trainer, n_jobs=n_splits, executor="thread" if n_splits > 1 else "auto")
    wall = time.perf_counter() - start
    model = study.load_best_model(model_fn())
    model.eval()
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    trials = study.study.get_trials()
    events = study.transfers()
    candidates = sum(len(getattr(study.transfer, "alphas", (1,))) for e in events if not e.reason)
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "test_accuracy": test_acc,
        "train_epochs": sum(
            t.user_attrs["train_epochs"] + t.user_attrs["explorer_epochs"] for t in trials
        ),  # fmt: skip
        "evaluations": n_splits * epochs + candidates + n_splits * n_splits,
        "transfers_tried": sum(1 for e in events if not e.reason),
        "transfers_kept": sum(1 for e in events if e.accepted),
        "wall_s": wall,
    }


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        acc = np.array([r["test_accuracy"] for r in mine])
        out.append({
            "method": method,
            "runs": len(mine),
            "mean": float(acc.mean()),
            "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "worst": float(acc.min()),
            "train_epochs": float(np.mean([r["train_epochs"] for r in mine])),
            "evaluations": float(np.mean([r["evaluations"] for r in mine])),
            "kept": int(sum(r["transfers_kept"] for r in mine)),
            "tried": int(sum(r["transfers_tried"] for r in mine)),
            "wall_s": float(np.mean([r["wall_s"] for r in mine])),
        })  # fmt: skip
    return out


def table(summary: list[dict], dataset: str, seeds: int) -> str:
    head = f"{'method':<13}{'mean':>8}{'std':>8}{'worst':>8}{'epochs':>8}{'evals':>8}"
    head += f"{'kept/tried':>12}{'wall s':>8}"
    lines = [f"test accuracy of the chosen model, {dataset}, {seeds} seeds", head]
    for s in summary:
        lines.append(
            f"{s['method']:<13}{s['mean']:8.4f}{s['std']:8.4f}{s['worst']:8.4f}"
            f"{s['train_epochs']:8.0f}{s['evaluations']:8.0f}"
            f"{str(s['kept']) + '/' + str(s['tried']):>12}{s['wall_s']:8.1f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], summary: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is optional
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(summary):
        accs = [r["test_accuracy"] for r in rows if r["method"] == s["method"]]
        ax.bar(i, s["mean"], yerr=s["std"], color="#8fb3d9", capsize=4)
        ax.scatter([i] * len(accs), accs, color="#1f4e79", zorder=3, s=12)
    ax.set_xticks(range(len(summary)), [s["method"] for s in summary])
    low = min(r["test_accuracy"] for r in rows)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("held-out test accuracy")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "digits", "fragile"], default="mnist")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-splits", type=int, default=4)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // args.n_splits))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in args.methods:
                row = run(args.dataset, method, seed, args.epochs, args.n_splits, Path(tmp))
                rows.append(row)
                print(f"seed {seed} {method:<13} test {row['test_accuracy']:.4f} "
                      f"({row['wall_s']:.0f} s)", flush=True)  # fmt: skip
    summary = summarise(rows)
    text = table(summary, args.dataset, args.seeds)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"quality_{args.dataset}.json"
    out.write_text(json.dumps({"summary": summary, "runs": rows, "table": text}, indent=1))
    plot(rows, summary, out.with_suffix(".png"), f"{args.dataset}: {args.seeds} seeds")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
