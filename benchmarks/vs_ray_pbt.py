"""optuna-mto against Ray Tune's Population Based Training, side by side in one run.

    pip install "ray[tune]"                                   # or: pip install -e ".[bench]"
    python benchmarks/vs_ray_pbt.py --dataset mnist   --seeds 3
    python benchmarks/vs_ray_pbt.py --dataset fragile --seeds 3

Same model, optimizer, epochs, batch size, training code (``SupervisedTrainer``'s
``train_epoch`` and ``evaluate``), population of 4, learning-rate search space,
perturbation factors (0.8, 1.2) and resample probability (0.25), and the same
held-out test set per seed (never seen by any trial or split):

  ray_pbt     Ray Tune PBT: 4 trials on one 80/20 (train, validation) split, exploit
              (bottom 25% copy a top-25% trial's checkpoint) and explore every epoch;
              the chosen model is the best trial's last checkpoint.
  mto_pbt     optuna-mto PBTTransfer: 4 splits, one random 80/20 split each; a donor's
              weights are kept only if they score better on the receiver's own
              validation set, then its learning rate is explored; the chosen model is
              the best by mean cross-split validation.
  mto_indep   optuna-mto, 4 splits without transfer (the baseline both should beat).

Prints test accuracy (mean, std, worst) and wall time per method (Ray's start-up is
timed apart from its tuning), and writes benchmarks/results/vs_ray_pbt_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402 - same data, models and optuna-mto runs as the quality benchmark

import optuna_mto  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
POPULATION = 4
METHODS = ("ray_pbt", "mto_pbt", "mto_indep")


def lr_bounds(dataset: str) -> tuple[float, float]:
    """The learning-rate search space of quality.py's PBT method."""
    high = 2.0 if dataset == "fragile" else 1e-2
    return high / 100, high


def _trainer(dataset: str, seed: int, epochs: int) -> tuple[Any, Any, Any]:
    (x, y), test, model_fn, opt_fn, _ = quality.load(dataset, seed)
    trainer = optuna_mto.SupervisedTrainer(
        model_fn, (x, y), optimizer_fn=opt_fn, epochs=epochs, batch_size=64, seed=seed
    )
    return trainer, test, model_fn


def ray_trainable(config: dict[str, Any], dataset: str, seed: int, epochs: int) -> None:
    """One PBT trial: trains with ``config["lr"]``, reports and checkpoints every epoch."""
    from ray import tune

    torch.set_num_threads(1)
    trainer, _, _ = _trainer(dataset, seed, epochs)
    n = len(trainer.dataset[1])
    order = np.random.default_rng([seed, 7]).permutation(n)
    valid, train = order[: n // 5], order[n // 5 :]
    member = int(config["member"])
    model = trainer.build_model(member)
    optimizer = trainer.optimizer_fn(model.parameters())
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restart, or PBT's exploit: continue from that state
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"]) + 1
    for group in optimizer.param_groups:  # the (possibly explored) learning rate
        group["lr"] = float(config["lr"])
    for epoch in range(start, epochs):
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, member, epoch]).generate_state(1)[0])
        )
        trainer.train_epoch(model, optimizer, train, generator)
        value = trainer.evaluate(model, valid)
        with tempfile.TemporaryDirectory() as folder:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
            }
            torch.save(state, Path(folder) / "state.pt")
            tune.report(
                {"val_acc": value, "epoch": epoch + 1},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def run_ray(dataset: str, seed: int, epochs: int, home: Path) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    # Ray's worker processes import this module's helpers by name.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH", "")) if p
    )
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    startup = time.perf_counter() - start
    low, high = lr_bounds(dataset)
    trainer, (x_test, y_test), model_fn = _trainer(dataset, seed, epochs)
    initial_lr = trainer.optimizer_fn(model_fn().parameters()).param_groups[0]["lr"]
    scheduler = PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=1,
        hyperparam_mutations={"lr": tune.loguniform(low, high)},
        quantile_fraction=0.25,
        resample_probability=0.25,
        perturbation_factors=(1.2, 0.8),
    )
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, dataset=dataset, seed=seed, epochs=epochs),
        {"cpu": (os.cpu_count() or 1) / POPULATION},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": initial_lr, "member": tune.grid_search(list(range(POPULATION)))},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            metric="val_acc",
            mode="max",
            num_samples=1,
            max_concurrent_trials=POPULATION,
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name=f"{dataset}-{seed}", storage_path=str(home / "ray"), verbose=0
        ),
    )
    start = time.perf_counter()
    try:
        results = tuner.fit()
        wall = time.perf_counter() - start
        best = results.get_best_result(metric="val_acc", mode="max", scope="last")
        with best.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
    finally:
        ray.shutdown()
    model = model_fn()
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return {
        "dataset": dataset, "method": "ray_pbt", "seed": seed, "test_accuracy": test_acc,
        "val_accuracy": float(best.metrics["val_acc"]), "wall_s": wall, "startup_s": startup,
        "train_epochs": POPULATION * epochs,
    }  # fmt: skip


def run_mto(dataset: str, method: str, seed: int, epochs: int, home: Path) -> dict[str, Any]:
    row = quality.run(dataset, {"mto_pbt": "pbt", "mto_indep": "independent"}[method],
                      seed, epochs, POPULATION, home)  # fmt: skip
    return {**row, "method": method, "startup_s": 0.0}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        acc = [r["test_accuracy"] for r in mine]
        out.append({
            "method": method, "runs": len(mine), "mean": statistics.fmean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "worst": min(acc),
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
            "startup_s": statistics.fmean(r["startup_s"] for r in mine),
        })  # fmt: skip
    return out


def table(summary: list[dict[str, Any]], dataset: str, seeds: int, epochs: int) -> str:
    head = (f"{dataset}: test accuracy over {seeds} seed(s), population {POPULATION}, "
            f"{epochs} epochs, {os.cpu_count()} CPU cores")  # fmt: skip
    lines = [
        head,
        f"{'method':<10} {'mean':>7} {'std':>7} {'worst':>7} {'wall s':>7} {'+start s':>8}",
    ]
    for s in summary:
        lines.append(f"{s['method']:<10} {s['mean']:7.4f} {s['std']:7.4f} {s['worst']:7.4f} "
                     f"{s['wall_s']:7.1f} {s['startup_s']:8.1f}")  # fmt: skip
    by = {s["method"]: s for s in summary}
    if "ray_pbt" in by and "mto_pbt" in by:
        mto, ray = by["mto_pbt"], by["ray_pbt"]
        lines.append(
            f"mto_pbt - ray_pbt: {mto['mean'] - ray['mean']:+.4f} test accuracy; wall-time "
            f"ratio mto/ray {mto['wall_s'] / ray['wall_s']:.2f} (ray's start-up excluded)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "digits", "fragile"], default="mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: quality.py's")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/...)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    epochs = args.epochs or quality.load(args.dataset, 0)[4]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mto-vs-ray-") as tmp:
        for seed in range(args.seeds):
            for method in args.methods:
                home = Path(tmp) / f"{method}-{seed}"
                home.mkdir()
                if method == "ray_pbt":
                    row = run_ray(args.dataset, seed, epochs, home)
                else:
                    row = run_mto(args.dataset, method, seed, epochs, home)
                rows.append(row)
                print(f"seed {seed} {method:<10} test {row['test_accuracy']:.4f} "
                      f"wall {row['wall_s']:.1f} s", flush=True)  # fmt: skip
    summary = summarise(rows)
    print(table(summary, args.dataset, args.seeds, epochs))
    out = Path(args.out) if args.out else RESULTS / f"vs_ray_pbt_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": rows, "epochs": epochs}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
