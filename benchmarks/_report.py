"""Markdown tables of benchmarks/quality.py results, for the README.

python benchmarks/_report.py mnist fragile noisy digits noisy_long digits_long

Prints the tables and redraws each setting's PNG from the same merged runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _pts(value: float) -> str:
    return f"{100 * value:+.2f}"


def _ci(stat: dict[str, Any]) -> str:
    if stat.get("n", 0) < 2:
        return "-"
    return f"{_pts(stat['diff'])} ({_pts(stat['ci'][0])}, {_pts(stat['ci'][1])})"


def merged(setting: str) -> dict[str, Any]:
    """The results of ``setting``; runs of ``quality_<setting>_*.json`` files are merged in."""
    data = json.loads((RESULTS / f"quality_{setting}.json").read_text())
    extra = sorted(p for p in RESULTS.glob(f"quality_{setting}_*.json") if _run_of(p, setting))
    if extra:
        from quality import summarise

        # A (method, seed) already present keeps its first run: later files add methods
        # (e.g. amto_blend), and their replicate rows of earlier methods stay in their file.
        seen = {(r["method"], r["seed"]) for r in data["runs"]}
        for path in extra:
            for run in json.loads(path.read_text())["runs"]:
                if (run["method"], run["seed"]) not in seen:
                    data["runs"].append(run)
                    seen.add((run["method"], run["seed"]))
        data["summary"] = summarise(data["runs"])
    return data


def _run_of(path: Path, setting: str) -> bool:
    """Whether ``path`` holds runs of ``setting`` (``quality_digits_long`` is another setting)."""
    from quality import SETTINGS

    return not any(
        path.stem == f"quality_{other}" or path.stem.startswith(f"quality_{other}_")
        for other in SETTINGS
        if other != setting and other.startswith(f"{setting}_")
    )


def _halves(shares: list[list[float | None] | None]) -> tuple[float, float]:
    """Mean share in the first and in the second half of the runs, over runs."""
    rows = [row for row in shares if row]
    return tuple(  # type: ignore[return-value]
        float(np.mean([row[i] for row in rows if row[i] is not None])) for i in (0, 1)
    )


def markdown(setting: str) -> str:
    """Tables of ``setting`` (merged results, see :func:`merged`)."""
    data = merged(setting)
    summary, protocol = data["summary"], data["protocol"]
    n = max(r["n"] for r in summary["table"])
    lines = [
        f"**{setting}** ({n} paired seeds, {protocol['epochs']} epochs, K={protocol['k']}, "
        f"transfer every {protocol['interval']} epochs)",
        "",
        "| method / output | seeds | test acc. mean | worst seed | diff to independent/single, "
        "points (95% CI) | worst diff | diversity | splits < 20% | epochs | kept/tried |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["table"]:
        lines.append(
            f"| {r['method']} / {r['output']} | {r['n']} | {r['mean']:.4f} | {r['worst']:.4f} | "
            f"{_ci(r)} | "
            f"{_pts(r['worst_diff'])} | {r['diversity_final']:.3f} | {r['diverged']} | "
            f"{r['train_epochs']:.0f} | {r['kept']}/{r['tried']} |"
        )
    lines.append("")
    ens = summary["ensemble_vs_single"]
    parts = [f"{m} {_ci(s)}" for m, s in ens.items() if s.get("n")]
    lines.append(
        "Ensemble minus the same method's single model, points (95% CI): " + "; ".join(parts) + "."
    )
    best = summary["best_member"]
    lines.append(
        "Best of the K members on the test set (an oracle no method can pick): "
        + "; ".join(f"{m} {v:.4f}" for m, v in best.items())
        + "."
    )
    blend = summary.get("amto_blend_vs_independent_2x", {})
    amto = summary.get("amto_vs_independent_2x", {})
    if amto.get("n"):
        lines.append(
            f"AMTO minus independent_2x (same training epochs): single {_ci(amto)}, ensemble "
            f"{_ci(summary['amto_ens_vs_independent_2x_ens'])} points."
        )
    if blend.get("n"):
        lines.append(
            f"AMTO with blend=True minus independent_2x: single {_ci(blend)}, ensemble "
            f"{_ci(summary['amto_blend_ens_vs_independent_2x_ens'])} points."
        )
    relations = summary.get("relations") or []
    if relations:
        top = [r["top_is_best"] for r in relations if r["top_is_best"] is not None]
        spread = [r["spread"] for r in relations if r["spread"] is not None]
        kept = sum(r["explorers_kept"] for r in relations)
        judged = sum(r["explorers"] for r in relations)
        line = (
            f"AMTO relations: the top-scored source is the best other split for "
            f"{np.mean(top):.0%} of receivers (chance {1 / (protocol['k'] - 1):.0%}); mean "
            f"spread of final scores {np.mean(spread):.2f}; explorers kept {kept}/{judged}."
        )
        low = [r["lowest_is_worst"] for r in relations if r.get("lowest_is_worst") is not None]
        if low:
            first, second = _halves([r["draws_from_worst"] for r in relations])
            line += (
                f" The lowest-scored source is the worst other split for {np.mean(low):.0%} of "
                f"receivers; explorers drawn from the worst other split: {first:.0%} in the "
                f"first half of the run, {second:.0%} in the second."
            )
        bad = [r for r in relations if r.get("lowest_is_bad") is not None]
        if bad:
            first, second = _halves([r["draws_from_bad"] for r in bad])
            line += (
                f" The bad split (trained on shuffled labels) is the lowest-scored source for "
                f"{np.mean([r['lowest_is_bad'] for r in bad]):.0%} of the other receivers; "
                f"their explorers drawn from it: {first:.0%} in the first half of the run, "
                f"{second:.0%} in the second (chance {1 / (protocol['k'] - 1):.0%})."
            )
        lines.append(line)
    stalled = {}
    for r in data["runs"]:
        low = sum(m < 0.5 for m in r["members"])
        stalled[r["method"]] = stalled.get(r["method"], 0) + low
    lines.append(
        "Split models below 50% test accuracy at the end (stalled), summed over seeds: "
        + "; ".join(f"{m} {v}" for m, v in stalled.items())
        + "."
    )
    forced = [r["outputs"].get("uniform_soup_forced") for r in data["runs"]]
    forced = [f for f in forced if f is not None]
    if forced:
        lines.append(
            f"Uniform soups refused for lack of shared ancestry would have scored "
            f"{np.mean(forced):.4f} on average ({len(forced)} runs)."
        )
    return "\n".join(lines)


def plot(setting: str) -> None:
    """Redraw ``quality_<setting>.png`` from the merged results (the README's numbers)."""
    from _plot import plot_quality

    plot_quality(merged(setting), RESULTS / f"quality_{setting}.png")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print("\n\n".join(markdown(s) for s in sys.argv[1:]))
    for name in sys.argv[1:]:
        plot(name)
