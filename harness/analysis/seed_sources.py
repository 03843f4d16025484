"""Seed sources (`seeds.fresh` and other seed-source factors whose levels say which sources are redrawn).

The question is not whether level means differ (each level's mean is one draw of a random process) but
how much each source spreads accuracy. Per level: the std over distinct runs with its chi-square 95%
interval, compared against the all-fixed level (no source redrawn). The all-fixed level is the one whose
runs all share one seed block (or, without `seed_block`, is labelled `none`, `[]` or empty).

- All-fixed level deterministic (one distinct training, or no spread): its variance is 0, so the level's
  std interval is the source's own spread; there is nothing to test against.
- All-fixed level with spread (nondeterministic kernels): Bartlett's test (scipy bartlett; exact size under
  normal noise at small n, where Brown–Forsythe is far too conservative) of the level against the all-fixed
  level, and the F ratio of variances with its 95% interval (scipy f).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.intervals import std_ci
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
    groups = {str(k): g.to_numpy(float) for k, g in rows["accuracy"].groupby(lab, sort=False)}
    fixed = fixed_level(rows, factor)
    base = groups.get(fixed) if fixed is not None else None
    deterministic = base is not None and (len(base) < 2 or np.ptp(base) == 0)
    out.update(fixed_level=fixed, fixed_deterministic=deterministic if base is not None else None)
    if fixed is None:
        out["note"] = "no all-fixed level: stds are not compared against a baseline"
    elif deterministic:
        out["note"] = (f"all-fixed level '{fixed}' is deterministic ({len(base)} distinct run(s)): "
                       "each level's std is its sources' own spread")
    for level, x in groups.items():
        row: dict[str, Any] = {"level": level, "n": int(len(x)), "std": num(np.std(x, ddof=1)) if len(x) > 1 else None,
                               "std_ci": std_ci(x) if len(x) > 1 else None, "variance_ratio": None,
                               "variance_ratio_ci": None, "p_vs_fixed": None}
        if base is not None and level != fixed and not deterministic and len(x) >= 2 and len(base) >= 2:
            v, v0 = np.var(x, ddof=1), np.var(base, ddof=1)
            d1, d2 = len(x) - 1, len(base) - 1
            with quiet():
                row["p_vs_fixed"] = num(ss.bartlett(x, base).pvalue)
            row["variance_ratio"] = num(v / v0)
            row["variance_ratio_ci"] = [num(v / v0 / ss.f.ppf(0.975, d1, d2)), num(v / v0 / ss.f.ppf(0.025, d1, d2))]
        out["levels"].append(row)
    return out
