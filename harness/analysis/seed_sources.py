"""Seed sources (`seeds.fresh` and other seed-source factors whose levels say which sources are redrawn).

The question is not whether level means differ (each level's mean is one draw of a random process) but
how much each source spreads accuracy. Per level: the std over distinct runs with its chi-square 95%
interval, compared against the all-fixed level (no source redrawn). When other factors vary too, the std is
pooled within their settings (deviations from each setting's mean, df = runs − settings), so a treatment
effect is not mistaken for seed spread. The all-fixed level is the one whose
runs all share one seed block (or, without `seed_block`, is labelled `none`, `[]` or empty).

- All-fixed level deterministic (one distinct training, or no spread): its variance is 0, so the level's
  std interval is the source's own spread; there is nothing to test against.
- All-fixed level with spread (nondeterministic kernels): the two-sided F test of the level's variance
  against the all-fixed level's (scipy.stats.f; exact under normal noise, as Bartlett's test with two
  groups, and it takes the pooled degrees of freedom), with the variance ratio's 95% interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.intervals import std_bounds
from harness.analysis.runs_table import factor_columns
from harness.analysis.structure import labels, rows_for

FIXED_LABELS = ("none", "[]", "")


def fixed_level(rows: pd.DataFrame, factor: str) -> str | None:
    """The all-fixed level of a seed-source factor, or None when no level qualifies."""
    lab = labels(rows, factor)
    if "seed_block" in rows.columns:
        blocks = rows["seed_block"].astype(str).groupby(lab).nunique()
        single = [lv for lv, n in blocks.items() if n == 1 and (lab == lv).sum() >= 1]
        if len(single) == 1:
            return str(single[0])
    named = [lv for lv in lab.unique() if str(lv).strip().lower() in FIXED_LABELS]
    return str(named[0]) if named else None


def seed_source_spread(df: pd.DataFrame, factor: str, rows: pd.DataFrame | None = None) -> dict[str, Any]:
    """Per level of a seed-source factor: distinct runs, std with chi-square CI, comparison to all-fixed."""
    rows = rows_for(df, factor) if rows is None else rows
    out: dict[str, Any] = {"factor": factor, "fixed_level": None, "fixed_deterministic": None, "levels": [],
                           "note": ""}
    if factor not in rows.columns or rows.empty:
        out["note"] = "no finished runs"
        return out
    lab = labels(rows, factor)
    others = [f for f in factor_columns(df) if f != factor and f in rows.columns and rows[f].nunique() > 1]
    cell = rows[others].astype(str).agg(" · ".join, axis=1) if others else pd.Series("", index=rows.index)
    y = rows["accuracy"].astype(float)
    resid = y - y.groupby([lab, cell]).transform("mean")
    pooled: dict[str, tuple[np.ndarray, int]] = {}
    for level in lab.unique():
        idx = lab.index[lab == level]
        pooled[str(level)] = (resid.loc[idx].to_numpy(float), int(len(idx) - cell.loc[idx].nunique()))
    fixed = fixed_level(rows, factor)
    base = pooled.get(fixed) if fixed is not None else None
    deterministic = bool(base is not None and (base[1] < 1 or np.ptp(base[0]) == 0))
    out.update(fixed_level=fixed, fixed_deterministic=deterministic if base is not None else None)
    if others:
        out["note"] = f"stds pooled within settings of {', '.join(others)}. "
    if fixed is None:
        out["note"] += "no all-fixed level: stds are not compared against a baseline"
    elif deterministic:
        out["note"] += (f"all-fixed level '{fixed}' is deterministic (no spread within a setting): "
                        "each level's std is its sources' own spread")
    out["note"] = out["note"].strip()
    for level, (r, dof) in pooled.items():
        sd = float(np.sqrt(np.sum(r**2) / dof)) if dof >= 1 else None
        row: dict[str, Any] = {"level": level, "n": int(len(r)), "df": dof, "std": num(sd),
                               "std_ci": None, "variance_ratio": None, "variance_ratio_ci": None, "p_vs_fixed": None}
        if sd is not None:
            lo, hi = std_bounds(sd, dof)
            row["std_ci"] = [num(lo), num(hi)]
        if base is not None and level != fixed and not deterministic and sd is not None:
            v0, d2 = float(np.sum(base[0] ** 2) / base[1]), base[1]
            ratio = sd**2 / v0
            with quiet():
                tail = min(ss.f.cdf(ratio, dof, d2), ss.f.sf(ratio, dof, d2))
            row.update(p_vs_fixed=num(min(1.0, 2 * tail)), variance_ratio=num(ratio),
                       variance_ratio_ci=[num(ratio / ss.f.ppf(0.975, dof, d2)), num(ratio / ss.f.ppf(0.025, dof, d2))])
        out["levels"].append(row)
    return out
