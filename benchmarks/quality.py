"""Does optuna-mto beat independent training? Paired seeds, held-out test set, CIs.

    python benchmarks/quality.py --setting mnist   --seeds 10   # CNN, SGD+momentum
    python benchmarks/quality.py --setting digits  --seeds 10   # MLP, Adam
    python benchmarks/quality.py --setting fragile --seeds 10   # MLP, SGD lr 1.0: splits stall
    python benchmarks/quality.py --setting noisy   --seeds 10   # MLP, 20% training labels flipped
    python benchmarks/quality.py --setting digits_long --seeds 10  # digits, 160 epochs: converged
    python benchmarks/quality.py --setting noisy_long  --seeds 10  # noisy, 80 epochs: plateau
    python benchmarks/quality.py --setting bad_donor --seeds 10    # split 0 learns noise
    python benchmarks/quality.py --setting mnist --plot-only    # redraw from the JSON

Protocol. Per seed, every method sees the same data: the same held-out test set (never
seen by any split), the same K=4 random splits, the same 10% selection rows held out from
every split (they rank the models and pick the greedy soup), and the same per-split
initialisations and minibatch orders. Methods:

  independent     K splits, no transfer (the baseline)
  independent_2x  the same, trained twice as many epochs: compute-matched to AMTO
  default         create_study() with no transfer argument: the library's default
  old_default     GreedyTransfer(): the default up to 0.2.0 (copies at every step)
  rescue          RescueTransfer(): a split takes a donor only when clearly behind
  rescue_i2/_i4   RescueTransfer(interval=2 or 4): the same rule, a look every 2 or 4 steps
  greedy          copy the best split's weights when they score better (the paper's MTO)
  diverse         truncation (only the worst quarter copies, only from the best quarter),
                  judged on the receiver's validation rows neither model trained on
  amto            the paper's AMTO: explorers judged, relations updated on validation loss
  amto_blend      amto, also judging the average of solver and explorer (``blend=True``)
  pbt             diverse + learning-rate exploration (PBT); not run on mnist
  papa            AveragingTransfer(): every split pulled toward the population's average
                  weights after a shared start (PAPA); its default output is the uniform soup
  papa_all        AveragingTransfer(interval=2, rate=1.0): weights replaced by the average
                  every 2 steps (PAPA-all)

Each method gives four final outputs, scored on the test set: ``single`` (the model the
study exports), ``ensemble`` (mean softmax of the K models), ``uniform_soup`` and
``greedy_soup`` (weight averages; None when refused for lack of shared ancestry).
Reported: mean test accuracy, the paired difference to ``independent/single`` with a 95%
t-interval over seeds, the worst seed, the splits left diverged (test accuracy < 0.2),
and diversity (mean pairwise disagreement of the K models on 300 test rows) per epoch.
Writes benchmarks/results/quality_<setting>.json (after every seed) and .png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import FloatDistribution
from scipy import stats
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist import load_mnist, make_cnn  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto import transfer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = (
    "independent", "independent_2x", "default", "old_default", "rescue", "greedy", "diverse",
    "amto", "amto_blend", "pbt", "papa", "papa_all", "rescue_i2", "rescue_i4",
)  # fmt: skip
OUTPUTS = (
    "single", "ensemble", "uniform_soup", "greedy_soup", "distilled", "no_teacher",
    "distilled_mix", "no_teacher_mix", "distilled_mix_hw1",
)  # fmt: skip
#: Distillation recipes (``--distil-recipe``): output suffix, epochs (x the setting's),
#: mixup, hard_weight, whether to train the no-teacher baseline. ``mix`` is function
#: matching: the teacher labels mixed images, 2x the epochs (chosen on tuning seeds
#: 100-105 by ``distil_sweep.py --grid warm``); ``mix_hw1`` adds the mixed true labels
#: (``--grid mixup``, seeds 100-101); its baseline is ``mix``'s, ``no_teacher_mix``.
RECIPES = {
    "plain": ("", 1, 0.0, 0.0, True),
    "mix": ("_mix", 2, 1.0, 0.0, True),
    "mix_hw1": ("_mix_hw1", 2, 1.0, 1.0, False),
}
K, INTERVAL, DIVERSITY_ROWS, DIVERGED = 4, 2, 300, 0.2


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-3)


def sgd_mnist(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def sgd_fragile(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1.0, momentum=0.9)


#: setting -> (model, optimizer, epochs, PBT learning-rate range)
SETTINGS: dict[str, tuple[Any, Any, int, tuple[float, float]]] = {
    "mnist": (make_cnn, sgd_mnist, 20, (5e-3, 0.2)),
    "digits": (mlp, adam, 20, (2e-4, 2e-2)),
    "fragile": (mlp, sgd_fragile, 16, (2e-2, 2.0)),
    "noisy": (mlp, adam, 20, (2e-4, 2e-2)),
    # Trained to convergence, where extra epochs buy nothing: a sweep of independent splits
    # (3 seeds) gave digits 0.9424/0.9573/0.9610/0.9675/0.9675/0.9675 test accuracy at
    # 20/40/80/160/240/320 epochs, and noisy 0.9294/0.9443/0.9415/0.9387 at 20/40/80/160
    # (the flipped labels are learnt after ~40). Here compute-matching AMTO (2x epochs for
    # the baseline) compares search with search, not search with depth.
    "digits_long": (mlp, adam, 160, (2e-4, 2e-2)),
    "noisy_long": (mlp, adam, 80, (2e-4, 2e-2)),
    # One bad donor: split BAD_SPLIT trains on shuffled labels (its validation labels are
    # clean). Do AMTO's relation scores learn to stop drawing explorers from it?
    "bad_donor": (mlp, adam, 40, (2e-4, 2e-2)),
}
BAD_SPLIT = 0


def load(setting: str, seed: int, train_size: int) -> tuple[Any, Any]:
    """Return (train (x, y), test (x, y)); the test set is never seen by any split."""
    if setting == "mnist":
        (x, y), test = load_mnist(test_size=1000, seed=seed)
        return (x[:train_size], y[:train_size]), test
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    rng = np.random.default_rng(seed)
    order = torch.as_tensor(rng.permutation(len(x)))
    test, train = order[: len(x) // 5], order[len(x) // 5 :]
    y_train = y[train].clone()
    if setting.startswith("noisy"):  # flip 20% of the training labels to another class
        flip = rng.random(len(y_train)) < 0.2
        shift = torch.as_tensor(rng.integers(1, 10, size=len(y_train)))
        y_train[flip] = (y_train[flip] + shift[flip]) % 10
    return (x[train], y_train), (x[test], y[test])


def manager(method: str, setting: str) -> transfer.BaseTransferManager | None:
    if method == "default":
        return None  # create_study's default, whatever it is in this version
    if method == "old_default":
        return transfer.GreedyTransfer()  # the default up to 0.2: copy at every step
    if method == "rescue":
        return transfer.RescueTransfer()
    if method.startswith("rescue_i"):  # the default's rule, looking every 2 or 4 steps
        return transfer.RescueTransfer(interval=int(method[len("rescue_i") :]))
    if method.startswith("independent"):
        return transfer.NoTransfer()
    if method == "greedy":
        return transfer.GreedyTransfer(interval=INTERVAL, warmup=1)
    if method == "diverse":
        return transfer.GreedyTransfer(interval=INTERVAL, warmup=1, truncation=0.25, gate="unseen")
    if method == "amto":
        return transfer.AdaptiveTransfer(interval=INTERVAL, warmup=1, criterion="loss")
    if method == "amto_blend":
        return transfer.AdaptiveTransfer(interval=INTERVAL, warmup=1, criterion="loss", blend=True)
    if method == "papa":
        return transfer.AveragingTransfer()  # the library's defaults
    if method == "papa_all":
        return transfer.AveragingTransfer(interval=INTERVAL, rate=1.0)  # PAPA-all
    low, high = SETTINGS[setting][3]
    return transfer.PBTTransfer(
        interval=INTERVAL, warmup=1, truncation=0.25, gate="unseen",
        hyperparams={"lr": FloatDistribution(low, high, log=True)},
    )  # fmt: skip


class RecordingTrainer(optuna_mto.SupervisedTrainer):
    """A SupervisedTrainer that records each split's predictions on probe rows per epoch."""

    def __init__(
        self, *args: Any, probe: torch.Tensor, bad_split: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.probe = probe
        self.predictions: dict[tuple[int, int], np.ndarray] = {}
        self.bad_split = bad_split
        labels = self.dataset[1]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        self._shuffled = labels[order]
        self._local = threading.local()  # the split this thread trains

    def _batches(
        self, indices: np.ndarray, batch_size: int, generator: torch.Generator | None
    ) -> Any:
        """Training batches (those with a generator) of the bad split get shuffled labels."""
        batches = super()._batches(indices, batch_size, generator)
        split = getattr(self._local, "split", None)
        if generator is None or self.bad_split is None or split != self.bad_split:
            return batches
        rows = torch.as_tensor(indices, dtype=torch.long)
        rows = rows[torch.randperm(len(rows), generator=generator)]
        x = self.dataset[0]
        return ((x[c], self._shuffled[c]) for c in rows.split(batch_size))

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        self._local.split = trial.split
        report = trial.report

        def recording_report(value: float, step: int, **kwargs: Any) -> Any:
            result = report(value, step, **kwargs)
            model = kwargs["model"]
            model.eval()
            with torch.no_grad():
                pred = model(self.probe).argmax(1).numpy()
            model.train()
            self.predictions[(trial.split, step)] = pred
            return result

        trial.report = recording_report  # type: ignore[method-assign]
        super().__call__(trial)


def disagreement(preds: list[np.ndarray]) -> float:
    """Mean share of probe rows on which two models disagree, over all pairs."""
    pairs = list(itertools.combinations(preds, 2))
    return float(np.mean([(a != b).mean() for a, b in pairs])) if pairs else 0.0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def one_model_outputs(
    study: optuna_mto.MTOStudy,
    trainer: optuna_mto.SupervisedTrainer,
    model_fn: Any,
    epochs: int,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    recipe: str = "plain",
) -> dict[str, float]:
    """Distil the ensemble into one model, and its fair baseline: no teacher.

    Both are fresh models of the split architecture trained on every row a split may
    train on (all but the selection rows), in the same seeded order, for the recipe's
    epochs and with its mixup (the baseline mixes the labels as the inputs).
    """
    from optuna_mto._study.distill import train_without_teacher

    suffix, factor, mixup, hard_weight, baseline = RECIPES[recipe]
    n = len(trainer.dataset[1])
    rows = np.setdiff1d(np.arange(n), study.selection_indices(n))
    student = study.distill(
        trainer, epochs=epochs * factor, rows=rows, mixup=mixup, hard_weight=hard_weight
    )
    out = {f"distilled{suffix}": accuracy(student, x_test, y_test)}
    if baseline:
        plain = train_without_teacher(trainer, rows, epochs=epochs * factor, mixup=mixup)
        out[f"no_teacher{suffix}"] = accuracy(plain, x_test, y_test)
    return out


def run(
    setting: str, method: str, seed: int, train_size: int, home: Path, distil: str | None = None
) -> dict[str, Any]:
    (x, y), (x_test, y_test) = load(setting, seed, train_size)
    model_fn, opt_fn, epochs, _ = SETTINGS[setting]
    epochs = epochs * 2 if method == "independent_2x" else epochs
    trainer = RecordingTrainer(
        model_fn, (x, y), optimizer_fn=opt_fn, epochs=epochs, batch_size=64, seed=seed,
        probe=x_test[:DIVERSITY_ROWS], bad_split=BAD_SPLIT if setting == "bad_donor" else None,
    )  # fmt: skip
    os.environ["OPTUNA_MTO_HOME"] = str(home)
    study = optuna_mto.create_study(
        study_name=f"{setting}-{method}-{seed}", storage=f"sqlite:///{home / 'quality.db'}",
        n_splits=K, seed=seed, transfer=manager(method, setting), selection_fraction=0.1,
        heartbeat_interval=None,
    )  # fmt: skip
    start = time.perf_counter()
    study.optimize(trainer, n_jobs=K, executor="thread", dashboard=False)
    wall = time.perf_counter() - start

    summary = study.summary()
    best_models = [study.load_best_model(model_fn(), s).eval() for s in range(K)]
    members = [accuracy(m, x_test, y_test) for m in best_models]
    outputs: dict[str, Any] = {"single": members[summary.best_split]}
    outputs["ensemble"] = accuracy(study.ensemble(model_fn), x_test, y_test)
    if distil:
        outputs.update(one_model_outputs(study, trainer, model_fn, epochs, x_test, y_test, distil))
    for kind in ("uniform", "greedy"):
        try:
            soup, chosen, _ = study.soup(model_fn, kind, evaluate=trainer.evaluate)
            outputs[f"{kind}_soup"] = accuracy(soup, x_test, y_test)
            outputs[f"{kind}_soup_members"] = chosen
        except ValueError:  # refused: the members share no ancestry
            outputs[f"{kind}_soup"] = None
    if outputs["uniform_soup"] is None:  # what the refusal saves the user from
        soup, _, _ = study.soup(model_fn, "uniform", check_ancestry=False)
        outputs["uniform_soup_forced"] = accuracy(soup, x_test, y_test)
    trials = study.study.get_trials()
    events = study.transfers()
    steps = sorted({s for (_, s) in trainer.predictions})
    preds = trainer.predictions
    diversity = [disagreement([preds[(k, s)] for k in range(K) if (k, s) in preds]) for s in steps]
    with torch.no_grad():
        final = disagreement([m(x_test[:DIVERSITY_ROWS]).argmax(1).numpy() for m in best_models])
    best_states = [study.best_state_dict(s) for s in range(K)]
    identical = sum(
        all(torch.equal(a[n], b[n]) for n in a)
        for a, b in itertools.combinations(best_states, 2)
    )  # fmt: skip
    return {
        "setting": setting,
        "method": method,
        "seed": seed,
        "outputs": outputs,
        "members": members,
        "best_member": max(members),
        "diverged": sum(m < DIVERGED for m in members),
        "diversity_per_epoch": diversity,
        "diversity_final": final,
        "identical_pairs": identical,
        "lineages": {str(t.params["split"]): t.system_attrs.get("mto:lineage") for t in trials},
        "train_epochs": sum(
            t.user_attrs["train_epochs"] + t.user_attrs["explorer_epochs"] for t in trials
        ),  # fmt: skip
        "transfers_tried": sum(1 for e in events if not e.reason),
        "transfers_kept": sum(1 for e in events if e.accepted),
        "relations": relation_report(study, BAD_SPLIT if setting == "bad_donor" else None)
        if method.startswith("amto")
        else None,
        "chosen_split": summary.best_split,
        "wall_s": wall,
    }


def relation_report(study: optuna_mto.MTOStudy, bad: int | None = None) -> dict[str, Any]:
    """Do AMTO's relation scores learn? Final scores, and how they relate to donor quality.

    Donor quality is the split's selection score at the end. ``top_is_best``: share of
    receivers whose highest-scored source is the best other split; ``lowest_is_worst``:
    whose lowest-scored source is the worst other split (chance for both: 1 / (K - 1)).
    ``draws_from_worst``: share of explorers started from the receiver's worst other
    split in the first and the second half of the run (learning: the second is lower).
    With a ``bad`` split (bad_donor), ``lowest_is_bad`` and ``draws_from_bad`` say the
    same of it for the other receivers (it may not stay the worst: transfer rescues it).
    """
    summary = study.summary()
    finals: dict[int, dict[int, float]] = {}
    for trial in study.study.get_trials():
        keys = sorted(k for k in trial.user_attrs if k.startswith("relations:"))
        if keys:
            scores = trial.user_attrs[keys[-1]]["scores"]
            finals[trial.params["split"]] = {int(k): float(v) for k, v in scores.items()}
    selection = summary.selection or [float("nan")] * K
    hits, lows, spreads = [], [], []
    for scores in finals.values():
        best_other = max(scores, key=lambda s: selection[s])
        worst_other = min(scores, key=lambda s: selection[s])
        hits.append(max(scores, key=lambda s: scores[s]) == best_other)
        lows.append(min(scores, key=lambda s: scores[s]) == worst_other)
        spreads.append(max(scores.values()) - min(scores.values()))
    events = [e for e in study.transfers() if e.operator in ("explorer", "blend")]
    gains = [e.before - e.after for e in events]  # loss: positive when the explorer helped
    worst = {r: min((s for s in range(K) if s != r), key=lambda s: selection[s]) for r in range(K)}
    last = max((e.step for e in events), default=0)
    halves = [[e for e in events if (e.step > last / 2) == late] for late in (False, True)]
    others = [scores for r, scores in finals.items() if r != bad]
    from_bad = [[e for e in half if e.receiver != bad] for half in halves]
    return {
        "lowest_is_bad": float(np.mean([min(s, key=lambda k: s[k]) == bad for s in others]))
        if bad is not None and others
        else None,
        "draws_from_bad": [
            float(np.mean([e.donor == bad for e in h])) if h else None for h in from_bad
        ]
        if bad is not None
        else None,  # fmt: skip
        "final_scores": {str(k): v for k, v in finals.items()},
        "top_is_best": float(np.mean(hits)) if hits else None,
        "lowest_is_worst": float(np.mean(lows)) if lows else None,
        "draws_from_worst": [
            float(np.mean([e.donor == worst[e.receiver] for e in half])) if half else None
            for half in halves
        ],
        "spread": float(np.mean(spreads)) if spreads else None,
        "explorers": len(events),
        "explorers_kept": sum(e.accepted for e in events),
        "mean_loss_gain": float(np.mean(gains)) if gains else None,
    }


def paired(rows: list[dict[str, Any]], method: str, output: str, base: tuple[str, str]) -> dict:
    """Mean paired difference (method/output minus base) over seeds with a 95% t-interval."""
    mine = {r["seed"]: r["outputs"].get(output) for r in rows if r["method"] == method}
    ref = {r["seed"]: r["outputs"].get(base[1]) for r in rows if r["method"] == base[0]}
    seeds = sorted(s for s in mine if s in ref and mine[s] is not None and ref[s] is not None)
    if not seeds:
        return {"n": 0}
    diff = np.array([mine[s] - ref[s] for s in seeds])
    acc = np.array([mine[s] for s in seeds])
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))) \
        if len(diff) > 1 else float("nan")  # fmt: skip
    return {
        "n": len(seeds),
        "mean": float(acc.mean()),
        "worst": float(acc.min()),
        "diff": float(diff.mean()),
        "ci": [float(diff.mean() - half), float(diff.mean() + half)],
        "worst_diff": float(diff.min()),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        for output in OUTPUTS:
            stat = paired(rows, method, output, ("independent", "single"))
            if stat["n"] == 0:
                continue
            table.append({
                "method": method,
                "output": output,
                **stat,
                "diversity_final": float(np.mean([r["diversity_final"] for r in mine])),
                "diverged": int(sum(r["diverged"] for r in mine)),
                "identical_pairs": float(np.mean([r["identical_pairs"] for r in mine])),
                "train_epochs": float(np.mean([r["train_epochs"] for r in mine])),
                "kept": int(sum(r["transfers_kept"] for r in mine)),
                "tried": int(sum(r["transfers_tried"] for r in mine)),
            })  # fmt: skip
    extra = {
        "ensemble_vs_single": {m: paired(rows, m, "ensemble", (m, "single")) for m in methods},
        "amto_vs_independent_2x": paired(rows, "amto", "single", ("independent_2x", "single")),
        "amto_ens_vs_independent_2x_ens": paired(
            rows, "amto", "ensemble", ("independent_2x", "ensemble")
        ),
        "amto_blend_vs_independent_2x": paired(
            rows, "amto_blend", "single", ("independent_2x", "single")
        ),
        "amto_blend_ens_vs_independent_2x_ens": paired(
            rows, "amto_blend", "ensemble", ("independent_2x", "ensemble")
        ),
        "best_member": {
            m: float(np.mean([r["best_member"] for r in rows if r["method"] == m])) for m in methods
        },
        "diversity_per_epoch": {
            m: np.mean(
                [r["diversity_per_epoch"] for r in rows if r["method"] == m], axis=0
            ).tolist()
            for m in methods
        },
        "relations": [r["relations"] for r in rows if r["relations"]],
    }
    return {"table": table, **extra}


def format_table(summary: dict[str, Any], setting: str, n_seeds: int) -> str:
    head = (f"{'method':<15}{'output':<14}{'mean':>7}{'worst':>7}{'diff':>7}  {'95% CI':<16}"
            f"{'worst d':>8}{'divers':>7}{'dvgd':>5}{'epochs':>7}{'kept/tried':>11}")  # fmt: skip
    lines = [
        f"{setting}: held-out test accuracy, {n_seeds} paired seeds; diff = paired difference "
        "to independent/single",
        head,
    ]
    for r in summary["table"]:
        ci = f"[{r['ci'][0]:+.4f},{r['ci'][1]:+.4f}]"
        kept = f"{r['kept']}/{r['tried']}"
        lines.append(
            f"{r['method']:<15}{r['output']:<14}{r['mean']:7.4f}{r['worst']:7.4f}"
            f"{r['diff']:+7.4f}  {ci:<16}{r['worst_diff']:+8.4f}{r['diversity_final']:7.3f}"
            f"{r['diverged']:5d}{r['train_epochs']:7.0f}{kept:>11}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="mnist")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=1200, help="mnist training digits")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument(
        "--distil", action="store_true",
        help="also distil each method's ensemble into one model (outputs distilled and "
        "no_teacher: the same model and rows without a teacher)",
    )  # fmt: skip
    parser.add_argument(
        "--distil-recipe", choices=sorted(RECIPES), default="plain",
        help="plain: the setting's epochs; mix: function matching on mixed images, 2x "
        "the epochs (outputs distilled_mix and no_teacher_mix); mix_hw1: mix plus the "
        "mixed true labels (output distilled_mix_hw1)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    out = RESULTS / f"quality_{args.setting}{args.tag}.json"
    if args.plot_only:
        data = json.loads(out.read_text())
        from _plot import plot_quality

        plot_quality(data, out.with_suffix(".png"))
        return
    # MNIST: the CNN costs ~1 s per split-epoch on the 2-core machine; AMTO and its
    # compute-matched baseline (2x epochs each) run separately (--methods, --tag).
    mnist_methods = ["independent", "greedy", "diverse"]
    methods = args.methods or (mnist_methods if args.setting == "mnist" else list(METHODS))
    protocol = {
        "setting": args.setting, "seeds": args.seeds, "k": K, "interval": INTERVAL,
        "epochs": SETTINGS[args.setting][2], "train_size": args.train_size,
        "selection_fraction": 0.1, "methods": methods,
        "distil": args.distil_recipe if args.distil else None,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in methods:
                row = run(
                    args.setting, method, seed, args.train_size, Path(tmp),
                    args.distil_recipe if args.distil else None,
                )  # fmt: skip
                rows.append(row)
                o = row["outputs"]
                print(f"seed {seed} {method:<15} single {o['single']:.4f} ensemble "
                      f"{o['ensemble']:.4f} greedy soup {o['greedy_soup']} diversity "
                      f"{row['diversity_final']:.3f} ({row['wall_s']:.0f} s)",
                      flush=True)  # fmt: skip
            summary = summarise(rows)
            text = format_table(summary, args.setting, len({r["seed"] for r in rows}))
            data = {"protocol": protocol, "summary": summary, "runs": rows, "text": text}
            tmp_out = out.with_suffix(".json.tmp")
            tmp_out.write_text(json.dumps(data, indent=1))
            os.replace(tmp_out, out)
    print("\n" + text)
    try:
        from _plot import plot_quality

        plot_quality(data, out.with_suffix(".png"))
    except ImportError as err:  # pragma: no cover - Pillow is optional
        print(f"no plot: {err}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
