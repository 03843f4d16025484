"""Failures per level: a level that diverges 3 times in 10 is not as good as one that never does.

A run fails when it did not finish or has no valid accuracy (runs_table.finished_runs). Per level of a
factor: runs, failures and the failure rate with its Clopper–Pearson 95% interval (statsmodels
proportion_confint, method 'beta'). Test of equal failure rates: Fisher's exact test (scipy fisher_exact).
Two levels: the 2 × 2 table. More levels: each level against all others pooled (2 × 2 each), Holm across
levels; the smallest Holm-adjusted p tests "all rates equal" at the family-wise level (an R × 2 permutation
Fisher test took seconds per factor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.multiplicity import holm
from harness.analysis.runs_table import finished_runs
from harness.analysis.structure import labels


def failure_table(df: pd.DataFrame, factor: str) -> dict[str, Any]:
    """Failures per level of `factor` with Fisher's exact test; p is None when nothing failed."""
    from statsmodels.stats.proportion import proportion_confint

    out: dict[str, Any] = {"factor": factor, "levels": [], "n_failed": 0, "fisher_p": None, "method": None}
    if factor not in df.columns or df.empty:
        return out
    ok = pd.Series(False, index=df.index)
    ok[finished_runs(df).index] = True
    lab = labels(df, factor)
    counts = pd.DataFrame({"level": lab, "failed": ~ok}).groupby("level", sort=False)["failed"].agg(["size", "sum"])
    for level, row in counts.iterrows():
        n, k = int(row["size"]), int(row["sum"])
        lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
        out["levels"].append({"level": str(level), "runs": n, "failed": k, "rate": num(k / n),
                              "rate_ci": [num(lo), num(hi)]})
    out["n_failed"] = int(counts["sum"].sum())
    if out["n_failed"] == 0 or len(counts) < 2 or out["n_failed"] == int(counts["size"].sum()):
        return out
    table = np.column_stack([counts["sum"].to_numpy(int), (counts["size"] - counts["sum"]).to_numpy(int)])
    with quiet():
        if table.shape[0] == 2:
            out["fisher_p"] = num(ss.fisher_exact(table).pvalue)
            out["method"] = "Fisher exact"
            return out
        rest = table.sum(axis=0) - table
        ps = [num(ss.fisher_exact(np.vstack([table[i], rest[i]])).pvalue) for i in range(len(table))]
    adjusted = holm(ps)
    for row, p, p_adj in zip(out["levels"], ps, adjusted, strict=True):
        row.update(fisher_p_vs_rest=p, fisher_p_vs_rest_holm=p_adj)
    out["fisher_p"] = min(p for p in adjusted if p is not None)
    out["method"] = "Fisher exact, each level vs the rest, Holm"
    return out
