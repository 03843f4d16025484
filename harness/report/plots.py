"""PNG plots for the report (matplotlib Agg, written atomically).

Each function returns the file name it wrote, or None when there is nothing to draw.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.levels import groups_of


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    """File-name-safe version of a factor name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "factor"


def _save(fig: Any, out_dir: Path, name: str) -> str:
    """Save to a temp file in the same folder, then os.replace: readers never see half a PNG."""
    plt = _plt()
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out_dir)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, out_dir / name)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return name


def factor_plot(df: pd.DataFrame, factor: str, levels: list[dict[str, Any]], out_dir: Path) -> str | None:
    """Box + jittered runs per level, with the mean and its bootstrap 95% CI as an error bar."""
    groups = groups_of(df, factor)
    if len(groups) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.6))
    data = [100 * v for v in groups.values()]
    ax.boxplot(data, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, v in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="tab:blue")
    for i, row in enumerate(levels, start=1):
        if row["mean"] is None:
            continue
        m = 100 * row["mean"]
        ci = row.get("mean_ci")
        err = [[m - 100 * ci[0]], [100 * ci[1] - m]] if ci and None not in ci else None
        ax.errorbar(i + 0.3, m, yerr=err, fmt="D", color="tab:red", capsize=4, ms=5)
    ax.set_xticks(range(1, len(groups) + 1), [f"{k}\n(n={len(v)})" for k, v in groups.items()])
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{factor}: runs, box, mean ± 95% CI")
    return _save(fig, out_dir, f"factor_{safe_name(factor)}.png")


def accuracy_histogram(df: pd.DataFrame, out_dir: Path) -> str | None:
    """Histogram of the accuracy of every finished run."""
    acc = 100 * pd.to_numeric(df["accuracy"], errors="coerce").dropna().to_numpy()
    if len(acc) == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = min(30, max(5, len(acc) // 2)) if np.ptp(acc) > 0 else 1
    ax.hist(acc, bins=bins, color="tab:gray", edgecolor="white")
    ax.set_xlabel("validation accuracy (%)")
    ax.set_ylabel("runs")
    ax.set_title(f"Accuracy of {len(acc)} finished runs")
    return _save(fig, out_dir, "accuracy_hist.png")


def churn_heatmap(flips: dict[str, Any], out_dir: Path) -> str | None:
    """Pairwise fraction of validation predictions that differ between two runs."""
    runs = flips.get("churn", {}).get("runs", [])
    if len(runs) < 2:
        return None
    plt = _plt()
    m = 100 * np.array(flips["churn"]["matrix"], dtype=float)
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.35 * len(runs)), min(10, 1.5 + 0.3 * len(runs))))
    im = ax.imshow(m, cmap="viridis")
    fig.colorbar(im, ax=ax, label="predictions that differ (%)")
    if len(runs) <= 30:
        short = [r[:8] for r in runs]
        ax.set_xticks(range(len(runs)), short, rotation=90, fontsize=7)
        ax.set_yticks(range(len(runs)), short, fontsize=7)
    ax.set_title("Prediction churn between runs")
    return _save(fig, out_dir, "churn.png")


def flipped_grid(flips: dict[str, Any], images: dict[int, np.ndarray], out_dir: Path, n: int = 16) -> str | None:
    """The validation images whose prediction flips most often, with label, majority and flip rate."""
    top = []
    for row in flips.get("top", []):
        try:
            key = int(row["id"])
        except (TypeError, ValueError):
            continue
        if key in images:
            top.append((row, np.asarray(images[key])))
        if len(top) == n:
            break
    if not top:
        return None
    plt = _plt()
    cols = min(8, len(top))
    rows = int(np.ceil(len(top) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (row, img) in zip(axes.ravel(), top, strict=False):
        ax.imshow(img.squeeze(), cmap="gray")
        ax.set_title(f"id {row['id']}\ny={row['label']} maj={row['majority_pred']}\n"
                     f"flip {100 * row['flip_rate']:.0f}%", fontsize=7)
    return _save(fig, out_dir, "flipped.png")
