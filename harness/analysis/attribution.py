"""How much of the gap between two runs each difference explains, and how the gap compares with seed noise.

Input: accuracies of named configurations (points) trained over shared seed blocks (replicates), as planned by
`harness.study.compare`: A, B, A with one key moved to B's value (`A+key`), B with one key moved back
(`B-key`). Every contrast is taken within a block, so it is paired.

- A key's effect is the mean over blocks of ½[(A+key − A) + (B − B-key)]: its step on the path from A and on
  the path back from B, averaged. With two keys that is exactly the key's Shapley value; with more it averages
  the first and the last position of the path.
- The interaction is (B − A) − Σ(A+key − A): what the keys do together beyond the sum of their singles.
- Intervals: Student t over blocks, Bonferroni-adjusted over the effects and the interaction reported together,
  so every printed interval has the coverage of the claims beside it.
- Seed noise: the pooled within-point std of one run (a one-way model's residual, statsmodels). Two seeds of one
  configuration differ by s√2·T (T ~ t on its df): the percentile of a gap in that distribution, and how often
  two seeds differ at least as much.
- An observed gap (two stored runs) minus the config effect B − A estimated here is what the seeds (and any
  environment difference) contributed; its interval is the uncertainty of that estimate.
Pure: numpy, pandas, scipy, statsmodels only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05


def seed_noise(table: pd.DataFrame) -> dict[str, Any] | None:
    """The std of one run's accuracy around its configuration's mean, pooled over points: {std, df, n}."""
    import statsmodels.formula.api as smf

    finished = table.dropna(subset=["accuracy"])
    sizes = finished.groupby("point")["accuracy"].size()
    if (sizes - 1).sum() < 1:
        return None
    frame = finished.rename(columns={"accuracy": "y"})
    fit = smf.ols("y ~ C(point)", data=frame).fit() if finished["point"].nunique() > 1 else smf.ols(
        "y ~ 1", data=frame).fit()
    return {"std": float(math.sqrt(max(fit.mse_resid, 0.0))), "df": int(fit.df_resid), "n": int(len(finished))}


def gap_percentile(gap: float, noise: dict[str, Any] | None) -> dict[str, float | None]:
    """Where |gap| falls among differences of two seeds of one configuration: percentile and P(at least as large)."""
    if noise is None or noise["df"] < 1:
        return {"percentile": None, "p_as_large": None}
    if noise["std"] == 0:
        equal = gap == 0
        return {"percentile": 0.0 if equal else 100.0, "p_as_large": 1.0 if equal else 0.0}
    t = abs(gap) / (noise["std"] * math.sqrt(2))
    p_as_large = float(2 * stats.t.sf(t, noise["df"]))
    return {"percentile": 100 * (1 - p_as_large), "p_as_large": p_as_large}


def blocks(table: pd.DataFrame) -> pd.DataFrame:
    """point × replicate accuracies (rows: seed blocks)."""
    return table.pivot_table(index="replicate", columns="point", values="accuracy", aggfunc="first")


def _interval(contrast: pd.Series, level: float) -> dict[str, Any]:
    values = contrast.dropna().to_numpy(dtype=float)
    out: dict[str, Any] = {"effect": float(values.mean()) if len(values) else None, "ci": None, "n_blocks": len(values)}
    if len(values) >= 2:
        if np.ptp(values) == 0:
            out["ci"] = [float(values[0]), float(values[0])]
        else:
            ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence_level=level)
            out["ci"] = [float(ci.low), float(ci.high)]
    return out


def attribute(table: pd.DataFrame, roles: dict[str, str], varied: list[str], alpha: float = ALPHA,
              observed_gap: float | None = None) -> dict[str, Any]:
    """Effects of each varied key, their interaction, the config effect B − A, and the seeds' share of an
    observed gap. `table`: columns point, replicate, accuracy; `roles`: role (A, B, A+key, B-key) → point."""
    grid = blocks(table)
    noise = seed_noise(table)

    def column(role: str) -> pd.Series:
        name = roles.get(role)
        return grid[name] if name in grid else pd.Series(np.nan, index=grid.index)

    m = len(varied) + (1 if len(varied) > 1 else 0)  # the effects and the interaction are claimed together
    level = 1 - alpha / max(m, 1)
    a = column("A")
    out: dict[str, Any] = {"noise": noise, "level": level, "effects": {}, "interaction": None, "config_gap": None}
    if varied:
        b = column("B")
        out["config_gap"] = _interval(b - a, level)
        singles = []
        for key in varied:
            forward, backward = column(f"A+{key}") - a, b - column(f"B-{key}")
            singles.append(forward)
            out["effects"][key] = _interval((forward + backward) / 2, level)
        if len(varied) > 1:
            out["interaction"] = _interval((b - a) - sum(singles), level)
    if observed_gap is not None:
        explained = out["config_gap"] or {"effect": 0.0, "ci": None}  # seeds alone: the whole gap, exactly
        if explained["effect"] is not None:
            residual = observed_gap - explained["effect"]
            ci = None if explained["ci"] is None else sorted(observed_gap - c for c in explained["ci"])
            out["residual"] = {"effect": residual, "ci": ci, **gap_percentile(residual, noise)}
    return out


def reproduces(observed: float | None, replicates: pd.Series, level: float = 0.95) -> dict[str, Any] | None:
    """Is a stored run's accuracy within what its configuration gives here? A prediction interval for one more
    run from the replicates (t, n − 1 df): mean ± t·s·√(1 + 1/n)."""
    values = replicates.dropna().to_numpy(dtype=float)
    if observed is None or len(values) == 0:
        return None
    out = {"observed": observed, "mean": float(values.mean()), "n": len(values), "interval": None, "within": None}
    if len(values) >= 2:
        half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) * math.sqrt(1 + 1 / len(values))
        out["interval"] = [out["mean"] - half, out["mean"] + half]
        out["within"] = bool(out["interval"][0] <= observed <= out["interval"][1])
    else:
        out["within"] = bool(observed == out["mean"])
    return out
