"""Failures per level: a level that diverges 3 times in 10 is not as good as one that never does.

A run fails when it did not finish or has no valid accuracy (runs_table.finished_runs). Per level of a
factor: runs, failures and the failure rate with its Clopper–Pearson 95% interval (statsmodels
proportion_confint, method 'beta'). Test of equal failure rates: Fisher's exact test (scipy fisher_exact).
Two levels: the 2 × 2 table, exactly. More levels: the R × 2 Fisher–Freeman–Halton test, its p-value from
9,999 tables drawn with the margins fixed (scipy MonteCarloMethod, rng seeded: reproducible; the
PermutationMethod alternative took seconds per factor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.runs_table import finished_runs
from harness.analysis.structure import labels, rows_for

N_RESAMPLES = 9999


def failure_table(df: pd.DataFrame, factor: str) -> dict[str, Any]:
    """Failures per level of `factor` with Fisher's exact test; p is None when nothing failed."""
    from statsmodels.stats.proportion import proportion_confint

    out: dict[str, Any] = {"factor": factor, "levels": [], "n_failed": 0, "fisher_p": None, "method": None}
    if factor not in df.columns or df.empty:
        return out
    df = rows_for(df, factor, rows=df)  # one-at-a-time: the base runs and this factor's moves, failed or not
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
            out.update(fisher_p=num(ss.fisher_exact(table).pvalue), method="Fisher exact")
        else:
            mc = ss.MonteCarloMethod(n_resamples=N_RESAMPLES, rng=np.random.default_rng(0))
            out.update(fisher_p=num(ss.fisher_exact(table, method=mc).pvalue),
                       method=f"Fisher–Freeman–Halton exact ({N_RESAMPLES} Monte Carlo tables)")
    return out
