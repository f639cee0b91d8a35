"""Tuning the distilled model (issue 20): temperature, label weight, epochs, mixup.

    python benchmarks/distil_sweep.py --seeds 5 --first-seed 100        # tuning seeds
    python benchmarks/distil_sweep.py --train-size 3900 --first-seed 100

Per seed: the MNIST setting of ``quality.py`` (K=4 independent splits, the same data,
selection rows and seeds), then one student per variant, each a fresh CNN trained on
every row a split may train on (all but the selection rows) in the seeded batch order
of :func:`optuna_mto._study.distill.epoch_generator`, with the study's ensemble as the
teacher, and the no-teacher baseline for each epoch budget. Without mixup the
teacher's targets are computed once per row: the teacher is in eval mode, so this is
exactly what ``study.distill`` computes batch by batch. With mixup (``mix=a``) each
batch is mixed with a shuffled copy of itself (weight ~ Beta(a, a)) and the teacher
labels the mixed images ("function matching", Beyer et al., CVPR 2022); the labels'
loss and the no-teacher baselines mix the labels alike.

Prints each variant's mean held-out test accuracy and its paired difference (95%
t-interval over seeds) to the independent splits' chosen model (``single``), to their
ensemble, and to the no-teacher model of the same epochs. Tune on seeds the defaults
benchmark does not use (100+); evaluate the chosen variant with ``quality.py --distil``
on seeds 0-9. ``--grid`` picks the variants (``GRIDS``). Writes
``results/distil_sweep_<grid><tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import SETTINGS, K, accuracy, load, paired  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto import transfer  # noqa: E402
from optuna_mto._study.distill import Mixer, distillation_loss, epoch_generator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: (name, temperature, hard_weight, epochs, mixup alpha or 0, warm start, lr factor):
#: epochs 0 is the setting's; a warm student starts from the chosen split's model, not a
#: fresh one; the lr factor scales the optimizer's learning rate. ``warm`` was run by this
#: script at commit "benchmarks/distil_sweep.py: the warm-start and mixup sweep", whose
#: mixing drew from torch's generator (results/distil_sweep_warm.json).
GRIDS = {
    "warm": [
        ("T1", 1.0, 0.0, 0, 0.0, False, 1.0),
        ("T1_mix_x2", 1.0, 0.0, 40, 1.0, False, 1.0),
        ("warm_T1_e5_lr.1", 1.0, 0.0, 5, 0.0, True, 0.1),
        ("warm_T1_e10_lr.1", 1.0, 0.0, 10, 0.0, True, 0.1),
        ("warm_mix_e10_lr.1", 1.0, 0.0, 10, 1.0, True, 0.1),
        ("warm_T1_e10_lr.03", 1.0, 0.0, 10, 0.0, True, 0.03),
    ],
    # Does the teacher add to the labels? Fresh students, 2x epochs, mixup 1.0.
    "mixup": [
        ("mix_x2", 1.0, 0.0, 40, 1.0, False, 1.0),
        ("mix_x2_hw1", 1.0, 1.0, 40, 1.0, False, 1.0),
        ("mix_x2_T2_hw1", 2.0, 1.0, 40, 1.0, False, 1.0),
    ],
}
Variant = tuple[str, float, float, int, float, bool, float]


def baselines(variants: list[Variant]) -> list[tuple[int, float, bool, float]]:
    """The no-teacher baselines the variants need: (epochs, mixup, warm start, lr factor)."""
    return sorted({(v[3], v[4], v[5], v[6]) for v in variants})


def _batches(rows: np.ndarray, seed: int, epoch: int, size: int = 64) -> list[torch.Tensor]:
    order = torch.as_tensor(rows, dtype=torch.long)
    order = order[torch.randperm(len(order), generator=epoch_generator(seed, epoch))]
    return list(order.split(size))


def _student(
    trainer: optuna_mto.SupervisedTrainer,
    teacher: torch.nn.Module,
    probs: torch.Tensor | None,
    rows: np.ndarray,
    variant: Variant,
    init: dict[str, torch.Tensor],
) -> torch.nn.Module:
    _, temperature, hard_weight, epochs, mix, warm, lr_factor = variant
    x, y = trainer.dataset
    model = trainer.build_model(-1, "cpu")
    if warm:
        model.load_state_dict(init)
    epochs = epochs or trainer.epochs
    optimizer = trainer.optimizer_fn(model.parameters())
    for group in optimizer.param_groups:
        group["lr"] *= lr_factor
    mixer = Mixer(mix, trainer.seed)  # as study.distill mixes
    model.train()
    for epoch in range(epochs):
        for chunk in _batches(rows, trainer.seed, epoch):
            inputs, lam, perm = mixer(x[chunk])
            output = model(inputs)
            labels_loss = Mixer.loss(F.cross_entropy, output, y[chunk], lam, perm)
            if probs is None:  # no teacher
                loss = labels_loss
            else:
                if mix:
                    with torch.no_grad():
                        targets = teacher(inputs).exp()
                else:
                    targets = probs[chunk]
                loss = distillation_loss(output, targets, "classification", temperature)
                if hard_weight:
                    loss = loss + hard_weight * labels_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def _baseline(epochs: int, mix: float, warm: bool, lr_factor: float) -> str:
    mixed = f"_mix{mix:g}" if mix else ""
    return f"no_teacher_{'warm_' if warm else ''}e{epochs or 'default'}{mixed}_lr{lr_factor:g}"


def run(seed: int, train_size: int, home: Path, variants: list[Variant]) -> dict[str, Any]:
    (x, y), (x_test, y_test) = load("mnist", seed, train_size)
    model_fn, opt_fn, epochs, _ = SETTINGS["mnist"]
    trainer = optuna_mto.SupervisedTrainer(
        model_fn, (x, y), optimizer_fn=opt_fn, epochs=epochs, batch_size=64, seed=seed
    )
    os.environ["OPTUNA_MTO_HOME"] = str(home)
    study = optuna_mto.create_study(
        study_name=f"sweep-{seed}", storage=f"sqlite:///{home / 'sweep.db'}",
        n_splits=K, seed=seed, transfer=transfer.NoTransfer(), selection_fraction=0.1,
        heartbeat_interval=None,
    )  # fmt: skip
    study.optimize(trainer, n_jobs=K, executor="thread", dashboard=False)
    best = study.summary().best_split
    outputs = {
        "single": accuracy(study.load_best_model(model_fn(), best), x_test, y_test),
        "ensemble": accuracy(study.ensemble(model_fn), x_test, y_test),
    }
    teacher = study.ensemble(model_fn).eval()
    rows = np.setdiff1d(np.arange(len(y)), study.selection_indices(len(y)))
    with torch.no_grad():
        probs = teacher(x).exp()
    init = study.best_state_dict(best)
    for n_epochs, mix, warm, lr in baselines(variants):
        plain = _student(trainer, teacher, None, rows, ("", 1, 0, n_epochs, mix, warm, lr), init)
        outputs[_baseline(n_epochs, mix, warm, lr)] = accuracy(plain, x_test, y_test)
    for variant in variants:
        student = _student(trainer, teacher, probs, rows, variant, init)
        outputs[variant[0]] = accuracy(student, x_test, y_test)
        print(f"  seed {seed} {variant[0]:<10} {outputs[variant[0]]:.4f}", flush=True)
    return {"method": "sweep", "seed": seed, "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--tag", default="")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="mixup")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    out = RESULTS / f"distil_sweep_{args.grid}{args.tag}.json"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(run(seed, args.train_size, Path(tmp), GRIDS[args.grid]))
            o = runs[-1]["outputs"]
            print(f"seed {seed} single {o['single']:.4f} ensemble {o['ensemble']:.4f}",
                  flush=True)  # fmt: skip
            out.write_text(json.dumps({"train_size": args.train_size, "runs": runs}, indent=1))
    print(f"{'variant':<12}{'mean':>8}  {'vs single':<24}{'vs ensemble':<24}{'vs no teacher'}")
    for name, _temperature, _hard_weight, n_epochs, mix, warm, lr in GRIDS[args.grid]:
        cells = []
        for ref in ("single", "ensemble", _baseline(n_epochs, mix, warm, lr)):
            stat = paired(runs, "sweep", name, ("sweep", ref))
            cells.append(f"{100 * stat['diff']:+.2f} ({100 * stat['ci'][0]:+.2f},"
                         f"{100 * stat['ci'][1]:+.2f})")  # fmt: skip
        mean = np.mean([r["outputs"][name] for r in runs])
        print(f"{name:<12}{mean:8.4f}  {cells[0]:<24}{cells[1]:<24}{cells[2]}")


if __name__ == "__main__":
    main()
