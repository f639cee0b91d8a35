"""The defaults' verdict (issue 20): each method's outputs against independent splits.

    python benchmarks/defaults.py fragile digits_long noisy_long mnist mnist_3900

Reads ``results/quality_<setting>_defaults.json`` (or under ``$BENCH_RESULTS``; written
by ``quality.py --methods independent default papa --tag _defaults``, ``--distil`` for the
default's distilled model; ``mnist_3900`` is the MNIST setting run with ``--train-size
3900 --tag _defaults_3900``), where the runs of a later ``..._defaults_<tag>.json``
replace those of the same method and seed (a rerun of one method after a change; their
outputs and fields are merged, so a rerun that adds an output keeps the others), and
prints, per setting, a Markdown table: each method's outputs as mean held-out test
accuracy, the paired difference to independent splits' ensemble and to their single
model (points, 95% t-interval over seeds), the lowest split's accuracy over all seeds and
the final diversity of the K models.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import paired  # noqa: E402

RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
#: The methods shown. ``old_default`` and ``rescue`` runs are older code's: their seeds
#: no longer pair with today's independent splits (see benchmarks/README.md).
METHODS = ("independent", "default", "rescue_i2", "rescue_i4", "papa")
OUTPUTS = (
    "single", "ensemble", "uniform_soup", "greedy_soup", "distilled", "no_teacher",
    "distilled_mix", "no_teacher_mix", "distilled_mix_hw1",
)  # fmt: skip


def _ci(stat: dict[str, Any]) -> str:
    if stat.get("n", 0) < 2:
        return "-"
    lo, hi = stat["ci"]
    return f"{100 * stat['diff']:+.2f} ({100 * lo:+.2f}, {100 * hi:+.2f})"


def _file(setting: str) -> Path:
    if setting.endswith("_3900"):
        return RESULTS / f"quality_{setting[: -len('_3900')]}_defaults_3900.json"
    return RESULTS / f"quality_{setting}_defaults.json"


def _runs(setting: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The setting's runs; a later file's ``<name>_<tag>.json`` replaces a (method, seed)."""
    first = _file(setting)
    data = json.loads(first.read_text())
    rows = {(r["method"], r["seed"]): r for r in data["runs"]}
    for path in sorted(RESULTS.glob(first.stem + "_*.json")):
        if path.stem[len(first.stem) + 1 :].split("_")[0].isdigit():
            continue  # another setting (mnist_defaults_3900, mnist_defaults_3900_v4)
        for r in json.loads(path.read_text())["runs"]:
            old = rows.get((r["method"], r["seed"]), {"outputs": {}})
            merged = {**old, **r, "outputs": {**old["outputs"], **r["outputs"]}}
            rows[(r["method"], r["seed"])] = merged  # a field the rerun lacks: the earlier run's
    return data, list(rows.values())


def table(setting: str) -> str:
    data, rows = _runs(setting)
    seeds = len({r["seed"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [
        f"**{setting}** ({seeds} paired seeds, {data['protocol']['epochs']} epochs)",
        "",
        "| method | output | test acc. | vs independent ensemble | vs independent single "
        "| lowest split | diversity |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        low = min(min(r["members"]) for r in mine)
        div = float(np.mean([r["diversity_final"] for r in mine]))
        for output in OUTPUTS:
            stat = paired(rows, method, output, ("independent", "ensemble"))
            if stat.get("n", 0) == 0:
                continue
            single = paired(rows, method, output, ("independent", "single"))
            lines.append(
                f"| {method} | {output} | {stat['mean']:.4f} | {_ci(stat)} | {_ci(single)} "
                f"| {low:.3f} | {div:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    for setting in sys.argv[1:] or ["fragile", "digits_long", "noisy_long", "mnist"]:
        if _file(setting).exists():
            print(table(setting) + "\n")
        else:
            print(f"({setting}: no results yet at {_file(setting).name})\n")


if __name__ == "__main__":
    main()
