"""Paired comparisons: replicate r drew the same seeds at every level, so it is a block.

Per (seed block, level) the accuracy is averaged over the other factors' settings; only blocks that
hold every level enter (complete-case). Tests:
- omnibus: repeated-measures ANOVA (statsmodels AnovaRM), i.e. the two-way model block + level
  without interaction, whose F is exact under normal, exchangeable errors;
- pairs: paired t (scipy ttest_rel) with the CI of the mean difference, Holm across pairs;
- spread: Pitman–Morgan test of equal variances of two paired levels (Pearson correlation of the
  block-wise sums and differences, scipy pearsonr; zero iff the variances are equal), every pair, Holm;
  `spread_p` is the smallest Holm-adjusted p. Unpaired spread tests treat the levels as independent and
  are far too conservative here (size 0.008 instead of 0.05 at 5 blocks).
- sd_diff: std of the paired differences of the first two levels, the noise a paired comparison faces
  (what seeds_needed uses for a paired design).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.multiplicity import holm
from harness.analysis.structure import block_cells, compared_pairs, rows_for


def paired_tests(df: pd.DataFrame, factor: str, rows: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """Paired analysis of `factor`, or None when the design is not paired for it."""
    from statsmodels.stats.anova import AnovaRM

    cells = block_cells(rows_for(df, factor) if rows is None else rows, factor)
    if cells is None:
        return None
    wide = cells.pivot(index="block", columns="level", values="y")
    order = list(dict.fromkeys(cells["level"]))
    wide = wide[order]
    out: dict[str, Any] = {"blocks": int(len(wide)), "levels": order, "anova_rm": None, "pairwise": [],
                           "spread_p": None, "sd_diff": None, "residual_std": None, "note": ""}
    y = wide.to_numpy(float)
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    df_res = (y.shape[0] - 1) * (y.shape[1] - 1)
    ms_res = float(np.sum(resid**2) / df_res) if df_res > 0 else 0.0
    out["residual_std"] = num(np.sqrt(ms_res))
    if ms_res <= 1e-30:
        out["note"] = "no spread left after removing blocks and levels: tests undefined"
        return out
    with quiet():
        table = AnovaRM(cells, depvar="y", subject="block", within=["level"]).fit().anova_table
    row = table.iloc[0]
    out["anova_rm"] = {"statistic": num(row["F Value"]), "p": num(row["Pr > F"]),
                       "df_num": num(row["Num DF"]), "df_denom": num(row["Den DF"])}
    rows_out = []
    for a, b in compared_pairs(df, factor, order):
        d = wide[a].to_numpy(float) - wide[b].to_numpy(float)
        r: dict[str, Any] = {"a": a, "b": b, "n_pairs": int(len(d)), "mean_diff": num(d.mean()), "ci": None,
                             "t": None, "df": int(len(d) - 1), "p": None, "sd_diff": num(np.std(d, ddof=1)),
                             "se": num(np.std(d, ddof=1) / np.sqrt(len(d))),
                             "spread_p": None}
        xa, xb = wide[a].to_numpy(float), wide[b].to_numpy(float)
        if np.ptp(d) > 0:
            with quiet():
                t = ss.ttest_rel(xa, xb)
                ci = t.confidence_interval(0.95)
            r.update(t=num(t.statistic), p=num(t.pvalue), ci=[num(ci.low), num(ci.high)])
            if np.ptp(xa + xb) > 0:
                with quiet():
                    r["spread_p"] = num(ss.pearsonr(xa + xb, d).pvalue)
        rows_out.append(r)
    for r, p in zip(rows_out, holm([r["p"] for r in rows_out]), strict=True):
        r["p_holm"] = p
    spread = [p for p in holm([r["spread_p"] for r in rows_out]) if p is not None]
    out["spread_p"] = min(spread) if spread else None
    out["pairwise"] = rows_out
    out["sd_diff"] = rows_out[0]["sd_diff"] if rows_out else None
    return out
