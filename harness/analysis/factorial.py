"""Treatments tested within the multi-factor model, not one factor at a time.

When several treatments vary together, comparing one factor's level groups pooled over the others mixes the
other factors' effects into the noise and, with unbalanced cells (what failed runs leave behind), into the
difference itself. Here every treatment is tested in one OLS (statsmodels) of all varied non-seed factors,
sum-coded, with the two-way interactions whose cells all hold >= 2 runs:

- mean: the type-III F of the factor (`anova_lm(typ=3)`): its unweighted marginal means are equal. With two
  levels F = t² of the marginal-mean contrast, so the interval printed beside it (`pairs`, `fit.t_test` on
  the contrast of marginal means over the grid of cells, t on the model's residual df) says the same thing.
- spread: Bartlett's test on each level's variance pooled within cells (deviations from the cell means,
  df = runs − cells): the same statistic as `scipy.stats.bartlett` with general degrees of freedom (equal to it
  with one cell per level), so an interaction or another factor's effect is not read as spread.
- cells: the runs per cell, and whether they are balanced (the verdict says when a comparison rests on
  unbalanced cells).
"""

from __future__ import annotations

from itertools import combinations, product
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.runs_table import copies_unknown, distinct_runs

MIN_DF = 2  # pooled within-cell df a level needs for the spread test (3 runs in one cell)


def _fit(d: pd.DataFrame, names: list[str]) -> tuple[Any, str] | None:
    """OLS with sum-coded main effects and every estimable two-way interaction; None when not identifiable."""
    import statsmodels.formula.api as smf

    terms = [f"C({n}, Sum)" for n in names]
    pairs = [f"C({a}, Sum):C({b}, Sum)" for a, b in combinations(names, 2)
             if (pd.crosstab(d[a], d[b]).to_numpy() >= 2).all()]
    for formula in ("y ~ " + " + ".join(terms + pairs), "y ~ " + " + ".join(terms)):
        with quiet():
            model = smf.ols(formula, data=d)
            rank = np.linalg.matrix_rank(model.exog)
        if rank == model.exog.shape[1] and len(d) - rank >= 1:
            with quiet():
                return model.fit(), formula
    return None


def _grid_exog(d: pd.DataFrame, grid: pd.DataFrame, formula: str) -> np.ndarray:
    """Model-matrix rows of every cell of the grid, coded as in the fit (same formula, same level sets)."""
    import statsmodels.formula.api as smf

    with quiet():
        exog = smf.ols(formula, data=pd.concat([d, grid.assign(y=0.0)], ignore_index=True)).exog
    return np.asarray(exog[len(d):], float)


def within_cell_bartlett(y: np.ndarray, level: np.ndarray, cell: np.ndarray) -> dict[str, Any]:
    """Bartlett's test of equal variances, each level's variance pooled within its cells.

    With one cell per level this is `scipy.stats.bartlett` (the test the one-factor verdict uses).
    """
    d = pd.DataFrame({"y": y, "level": level, "cell": cell})
    dev = d["y"] - d.groupby("cell")["y"].transform("mean")
    ss_level = (dev**2).groupby(d["level"], sort=False).sum()
    dof = (d.groupby("level", sort=False).size() - d.groupby("level", sort=False)["cell"].nunique()).astype(float)
    keep = dof >= MIN_DF
    out: dict[str, Any] = {"statistic": None, "p": None, "levels": [str(k) for k in dof.index[keep]],
                           "df": {str(k): int(v) for k, v in dof.items()},
                           "std": {str(k): num(np.sqrt(ss_level[k] / v)) if v > 0 else None for k, v in dof.items()}}
    ss_k, nu = ss_level[keep].to_numpy(float), dof[keep].to_numpy(float)
    if len(nu) < 2 or np.any(ss_k <= 0):
        return out
    var, total = ss_k / nu, nu.sum()
    pooled = ss_k.sum() / total
    k = len(nu)
    stat = (total * np.log(pooled) - np.sum(nu * np.log(var))) / (1 + (np.sum(1 / nu) - 1 / total) / (3 * (k - 1)))
    out.update(statistic=num(stat), p=num(ss.chi2.sf(stat, k - 1)))
    return out


def factorial_tests(df: pd.DataFrame, factors: list[str], treatments: list[str]) -> dict[str, Any]:
    """Per treatment: type-III F, marginal-mean contrasts and the within-cell spread test, from one model."""
    from statsmodels.stats.anova import anova_lm

    fin = distinct_runs(df).reset_index(drop=True)
    names = {f: f"f{i}" for i, f in enumerate(factors)}
    d = pd.DataFrame({"y": fin["accuracy"].to_numpy(float),
                      **{names[f]: fin[f].map(lambda v: "" if pd.isna(v) else str(v)) for f in factors}})
    out: dict[str, Any] = {"factors": list(factors), "formula": None, "testable": False, "reason": None,
                           "df_resid": None, "cells": {}, "balanced": None, "tests": {}}
    cells = d.groupby([names[f] for f in factors], sort=False).size()
    out["cells"] = {" · ".join(k if isinstance(k, tuple) else (k,)): int(v) for k, v in cells.items()}
    full = int(np.prod([d[names[f]].nunique() for f in factors]))
    out["balanced"] = bool(len(cells) == full and cells.nunique() == 1)
    cell_id = d[[names[f] for f in factors]].agg(" · ".join, axis=1).to_numpy()
    within = float(d.groupby(cell_id)["y"].agg(lambda v: np.ptp(v.to_numpy())).max())
    fitted = _fit(d, [names[f] for f in factors])
    if fitted is None:
        out["reason"] = "not testable: factors are confounded (levels coincide) or no residual df left"
        return out
    if within <= 0 and copies_unknown(df):
        out["reason"] = ("not testable: the replicates within every cell are identical (zero spread is not seed "
                         "noise to test against)")
        return out
    fit, formula = fitted
    with quiet():
        table = anova_lm(fit, typ=3)
    out.update(testable=True, formula=formula, df_resid=num(fit.df_resid))
    levels = {f: list(dict.fromkeys(d[names[f]])) for f in factors}
    grid = pd.DataFrame(list(product(*levels.values())), columns=[names[f] for f in factors])
    exog = _grid_exog(d, grid, formula)
    for f in treatments:
        row = table.loc[f"C({names[f]}, Sum)"]
        pairs = []
        for a, b in combinations(levels[f], 2):
            contrast = exog[(grid[names[f]] == a).to_numpy()].mean(0) - exog[(grid[names[f]] == b).to_numpy()].mean(0)
            with quiet():
                t = fit.t_test(contrast)
            lo, hi = np.asarray(t.conf_int(alpha=0.05)).ravel()
            pairs.append({"a": a, "b": b, "mean_diff": num(np.squeeze(t.effect)), "se": num(np.squeeze(t.sd)),
                          "df": num(fit.df_resid), "p": num(np.squeeze(t.pvalue)), "ci": [num(lo), num(hi)]})
        marginal = {lv: num(float(exog[(grid[names[f]] == lv).to_numpy()].mean(0) @ fit.params.to_numpy()))
                    for lv in levels[f]}
        spread = within_cell_bartlett(d["y"].to_numpy(float), d[names[f]].to_numpy(), cell_id)
        per_level = d.groupby(names[f], sort=False).size()
        out["tests"][f] = {"F": num(row["F"]), "p": num(row["PR(>F)"]), "df_num": num(row["df"]),
                           "df_denom": num(fit.df_resid), "marginal_means": marginal, "pairs": pairs,
                           "spread": spread, "runs_per_level": {str(k): int(v) for k, v in per_level.items()}}
    return out
