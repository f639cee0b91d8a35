"""PNG figures of benchmarks/quality.py results, drawn with Pillow (no matplotlib needed).

Left: paired difference of each (method, output) to independent/single, mean and 95%
interval over seeds. Right: diversity (mean pairwise disagreement of the K models on
held-out rows) per epoch, per method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLORS = {
    "independent": (31, 78, 121),
    "independent_2x": (120, 150, 190),
    "greedy": (200, 60, 40),
    "diverse": (40, 150, 70),
    "amto": (150, 80, 170),
    "amto_blend": (200, 140, 210),
    "pbt": (230, 150, 20),
}


def plot_quality(data: dict[str, Any], path: Path) -> None:
    """Draw the two panels of one setting's results into ``path``."""
    rows = data["summary"]["table"]
    if not rows:  # no baseline in this file (e.g. a run of extra methods): nothing to pair
        return
    width, height = 1100, max(420, 70 + 22 * len(rows))
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    protocol = data["protocol"]
    n = max(r["n"] for r in rows)
    draw.text((10, 8), f"{protocol['setting']}: paired difference to independent/single "
              f"(test accuracy, {n} seeds, 95% CI)", fill="black")  # fmt: skip

    # left panel: differences with intervals
    left, right, top = 230, 600, 40
    lows = [r["ci"][0] for r in rows if r["ci"][0] == r["ci"][0]] + [r["diff"] for r in rows]
    highs = [r["ci"][1] for r in rows if r["ci"][1] == r["ci"][1]] + [r["diff"] for r in rows]
    lo, hi = min(min(lows), -0.005), max(max(highs), 0.005)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad

    def x_of(value: float) -> float:
        return left + (value - lo) / (hi - lo) * (right - left)

    draw.line([(x_of(0), top - 5), (x_of(0), top + 22 * len(rows))], fill=(150, 150, 150))
    for i, r in enumerate(rows):
        y = top + 22 * i + 10
        color = COLORS.get(r["method"], (0, 0, 0))
        draw.text((10, y - 6), f"{r['method']}/{r['output']}", fill=color)
        if r["ci"][0] == r["ci"][0]:
            draw.line([(x_of(r["ci"][0]), y), (x_of(r["ci"][1]), y)], fill=color, width=2)
        cx = x_of(r["diff"])
        draw.ellipse([(cx - 4, y - 4), (cx + 4, y + 4)], fill=color)
    axis_y = top + 22 * len(rows) + 5
    for value in (lo + pad, 0.0, hi - pad):
        draw.text((x_of(value) - 20, axis_y), f"{value:+.3f}", fill="black")

    # right panel: diversity per epoch
    per_epoch = data["summary"]["diversity_per_epoch"]
    px0, px1, py0, py1 = 680, 1080, 40, height - 40
    series = {m: v for m, v in per_epoch.items() if v}
    if series:
        ymax = max(max(v) for v in series.values()) * 1.1 or 1.0
        xmax = max(len(v) for v in series.values()) - 1 or 1
        draw.rectangle([(px0, py0), (px1, py1)], outline=(180, 180, 180))
        draw.text((px0, py0 - 18), "diversity per epoch (pairwise disagreement)", fill="black")
        draw.text((px0 - 40, py0), f"{ymax:.2f}", fill="black")
        draw.text((px0 - 20, py1 - 10), "0", fill="black")
        draw.text((px1 - 40, py1 + 4), f"epoch {xmax}", fill="black")
        for j, (method, values) in enumerate(series.items()):
            color = COLORS.get(method, (0, 0, 0))
            points = [
                (px0 + i / xmax * (px1 - px0), py1 - v / ymax * (py1 - py0))
                for i, v in enumerate(values)
            ]
            if len(points) > 1:
                draw.line(points, fill=color, width=2)
            draw.text((px1 - 110, py0 + 6 + 14 * j), method, fill=color)
    img.save(path)
