"""Design-level statistics: where the spread comes from, and how many runs a study needs.

- variance_decomposition: statsmodels OLS with categorical main effects (plus two-way interactions
  when every cell of the pair has >= 2 runs) and anova_lm(typ=2). Each term's share is its type-II
  sum of squares over the total sum of squares; the residual is labelled "seed noise (residual)".
  Each term also gets its partial share SS/(SS + SS_residual) with a 95% CI for the population
  value by inverting the noncentral F (scipy.stats.ncf; Steiger 2004: eta²_p = λ/(λ+N)). When one
  term carries all the effect, the partial share equals the share of the total. (A bootstrap of
  runs within cells was tried and rejected: it keeps the noise-inflated observed share as its centre
  and excluded zero for null terms.) In unbalanced designs type-II sums of squares need not add up
  to the total; `shares_sum` says by how much.
- random_effects: variance component of a seed factor (REML, statsmodels MixedLM, other varied
  factors as fixed effects) and its intraclass share with the classic F-based interval (Searle
  1971) from the ANOVA table's F for that factor; exact when balanced, approximate otherwise.
(How many runs a comparison needs: harness.analysis.power.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.intervals import share_gci
from harness.analysis.runs_table import copies_unknown, distinct_runs, factor_columns

ALPHA = 0.05

RESIDUAL = "seed noise (residual)"


def _labels(fin: pd.DataFrame, factor: str) -> pd.Series:
    return fin[factor].map(lambda v: "" if pd.isna(v) else str(v))


def _model_terms(fin: pd.DataFrame, factors: list[str]) -> tuple[list[str], dict[str, str]]:
    """Varied factors that can enter the OLS; the rest are named with the reason they are left out."""
    used, excluded = [], {}
    for f in factors:
        if f not in fin.columns:
            excluded[f] = "not in the runs table"
            continue
        counts = _labels(fin, f).value_counts()
        if len(counts) < 2:
            excluded[f] = "constant (single level)"
        elif counts.max() < 2:
            excluded[f] = "one run per level: its effect cannot be separated from the residual"
        else:
            used.append(f)
    return used, excluded


def _fit_table(d: pd.DataFrame, formula: str) -> pd.DataFrame:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    with quiet():
        return anova_lm(smf.ols(formula, data=d).fit(), typ=2)


def _shares(table: pd.DataFrame, total: float) -> np.ndarray:
    return (table["sum_sq"] / total).to_numpy(float) if total > 0 else np.full(len(table), np.nan)


def variance_decomposition(df: pd.DataFrame, factors: list[str] | None = None) -> dict[str, Any]:
    """Share of the accuracy spread per factor (and interaction) vs seed noise, with partial-share CIs."""
    import statsmodels.formula.api as smf

    fin = distinct_runs(df).reset_index(drop=True)
    factors = factor_columns(df) if factors is None else list(factors)
    used, excluded = _model_terms(fin, factors)
    out: dict[str, Any] = {"factors": used, "excluded": excluded, "n": int(len(fin)), "formula": None,
                           "testable": False, "reason": None, "terms": [], "shares_sum": None,
                           "residual_std": None, "balanced": None, "note": ""}
    y = fin["accuracy"].to_numpy(float)
    total = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    if not used:
        out["reason"] = "not testable: no factor with >= 2 levels and replicated levels"
    elif total == 0:
        out["reason"] = "not testable: all values identical"
    if out["reason"]:
        return out
    names = {f: f"f{i}" for i, f in enumerate(used)}
    d = pd.DataFrame({"y": y, **{names[f]: _labels(fin, f) for f in used}})
    terms = [f"C({names[f]})" for f in used]
    labels = list(used)
    for i, a in enumerate(used):
        for b in used[i + 1:]:
            cells = pd.crosstab(d[names[a]], d[names[b]])
            if (cells.to_numpy() >= 2).all():
                terms.append(f"C({names[a]}):C({names[b]})")
                labels.append(f"{a} × {b}")
    formula = "y ~ " + " + ".join(terms)
    with quiet():
        model = smf.ols(formula, data=d)
        rank = np.linalg.matrix_rank(model.exog)
    if rank < model.exog.shape[1] or len(d) - rank < 1:
        formula = "y ~ " + " + ".join(terms[: len(used)])
        labels = list(used)
        with quiet():
            model = smf.ols(formula, data=d)
            rank = np.linalg.matrix_rank(model.exog)
        if rank < model.exog.shape[1] or len(d) - rank < 1:
            out["reason"] = "not testable: factors are confounded (levels coincide) or no residual df left"
            return out
        out["note"] = "interactions dropped: not estimable. "
    table = _fit_table(d, formula)
    if float(table["sum_sq"].iloc[-1]) <= 1e-12 * total and copies_unknown(df):
        out["reason"] = ("not testable: the replicates within every cell are identical (zero spread is not seed "
                         "noise to split the variance against)")
        return out
    cells = d.groupby([names[f] for f in used]).size()
    full = int(np.prod([d[names[f]].nunique() for f in used]))
    out["balanced"] = bool(len(cells) == full and cells.nunique() == 1)
    shares = _shares(table, total)
    ss_res, df_res = float(table["sum_sq"].iloc[-1]), float(table["df"].iloc[-1])
    ms_res = ss_res / df_res
    for k, (term, row) in enumerate(table.iterrows()):
        is_res = term == "Residual"
        partial = None if is_res or row["sum_sq"] + ss_res <= 0 else row["sum_sq"] / (row["sum_sq"] + ss_res)
        # ω² (Hays; Olejnik & Algina 2003): the share with the noise expected under no effect removed
        omega = None if is_res or total <= 0 else (row["sum_sq"] - row["df"] * ms_res) / (total + ms_res)
        p_omega = None if is_res else (row["sum_sq"] - row["df"] * ms_res) / (
            row["sum_sq"] + (len(d) - row["df"]) * ms_res)
        out["terms"].append({"term": RESIDUAL if is_res else labels[k], "df": num(row["df"]),
                             "sum_sq": num(row["sum_sq"]), "share": num(shares[k]), "partial_share": num(partial),
                             "omega_squared": num(omega), "partial_omega_squared": num(p_omega),
                             "partial_share_ci": None if is_res else partial_share_ci(
                                 row["F"], row["df"], df_res, len(d)),
                             "F": None if is_res else num(row["F"]),
                             "p": None if is_res else num(row["PR(>F)"])})
    out.update(testable=True, formula=formula, shares_sum=num(np.nansum(shares)),
               residual_std=num(math.sqrt(table["sum_sq"].iloc[-1] / table["df"].iloc[-1])))
    if not out["balanced"]:
        out["note"] += "unbalanced design: type-II shares need not sum to 100%. "
    out["note"] = out["note"].strip()
    return out


def partial_share_ci(f_obs: float, df1: float, df2: float, n: int,
                     level: float = 0.95) -> list[float | None] | None:
    """CI of the population partial share λ/(λ+N), λ from inverting scipy's noncentral F at F_obs."""
    from scipy.optimize import brentq

    if not (math.isfinite(f_obs) and df1 > 0 and df2 > 0):
        return None

    def cdf(lam: float) -> float:
        return float(ss.f.cdf(f_obs, df1, df2) if lam <= 0 else ss.ncf.cdf(f_obs, df1, df2, lam))

    def solve(target: float) -> float:
        """λ where the cdf falls to `target`; inf when beyond LAMBDA_MAX (a share of 1 to float precision)."""
        if cdf(0.0) <= target:
            return 0.0
        below, above = 0.0, 10.0
        while not cdf(above) <= target:  # also steps past NaN, which scipy returns for extreme F
            if above >= LAMBDA_MAX:
                return math.inf
            below, above = above, above * 2
        return float(brentq(lambda lam: cdf(lam) - target, below, above, xtol=1e-10))

    tail = (1 - level) / 2
    with quiet():
        lo, hi = solve(1 - tail), solve(tail)
    return [share_of(lo, n), share_of(hi, n)]


LAMBDA_MAX = 1e9  # beyond this, λ/(λ+n) rounds to 1 for any study size we plan


def share_of(lam: float, n: int) -> float | None:
    return 1.0 if math.isinf(lam) else num(lam / (lam + n))


def random_effects(df: pd.DataFrame, factor: str, *, others: list[str] | None = None,
                   crossed: list[str] | None = None) -> dict[str, Any]:
    """Variance component of `factor` (a seed) vs residual: REML estimates and the F-based share CI.

    `crossed`: other seed factors varied across `factor` (e.g. seeds.order × seeds.init). They are fitted
    jointly: REML with one variance component per seed factor (MixedLM vc_formula), and the F of `factor`
    from the ANOVA with the crossed factors in the model. `share` is then σ²_factor over the total of all
    components; the exact F interval (Searle) is for the partial share σ²_factor / (σ²_factor + σ²_residual)
    (`partial_share_ci`); there is no exact interval for the share of the total with crossed components, so
    `share_ci` is the generalized confidence interval (intervals.share_gci) from the same ANOVA table.
    """
    import statsmodels.formula.api as smf

    fin = distinct_runs(df).reset_index(drop=True)
    out: dict[str, Any] = {"factor": factor, "testable": False, "reason": None, "levels": 0,
                           "sd_factor": None, "sd_residual": None, "share": None, "share_ci": None,
                           "partial_share": None, "partial_share_ci": None, "crossed": [],
                           "method": "REML (statsmodels MixedLM); share CI from the ANOVA F (Searle)"}
    if factor not in fin.columns:
        out["reason"] = "not in the runs table"
        return out
    crossed = [f for f in (crossed or []) if f != factor and f in fin.columns and _labels(fin, f).nunique() > 1]
    others = [f for f in (others or []) if f != factor and f in fin.columns and f not in crossed]
    used, _ = _model_terms(fin, [factor, *others])
    g = _labels(fin, factor)
    out["levels"] = int(g.nunique())
    y = fin["accuracy"].to_numpy(float)
    if factor not in used or out["levels"] < 3:
        out["reason"] = "not testable: needs >= 3 levels and some level with >= 2 runs"
        return out
    if np.ptp(y) == 0:
        out["reason"] = "not testable: all values identical"
        return out
    fixed = [f for f in used if f != factor]
    d = pd.DataFrame({"y": y, "g": g, **{f"x{i}": _labels(fin, f) for i, f in enumerate(fixed)},
                      **{f"z{i}": _labels(fin, f) for i, f in enumerate(crossed)}})
    rhs = " + ".join(f"C(x{i})" for i in range(len(fixed))) or "1"
    terms = ["C(g)", *[f"C(x{i})" for i in range(len(fixed))], *[f"C(z{i})" for i in range(len(crossed))]]
    with quiet():
        if crossed:
            d["one"] = 1
            vc = {"g": "0 + C(g)", **{f"z{i}": f"0 + C(z{i})" for i in range(len(crossed))}}
            fit = smf.mixedlm(f"y ~ {rhs}", d, groups="one", re_formula="0", vc_formula=vc).fit(reml=True)
            comps = dict(zip(fit.model.exog_vc.names, np.maximum(np.asarray(fit.vcomp, float), 0.0), strict=True))
            var_a, var_other = comps["g"], sum(v for k, v in comps.items() if k != "g")
        else:
            fit = smf.mixedlm(f"y ~ {rhs}", d, groups=d["g"]).fit(reml=True)
            var_a, var_other = max(float(fit.cov_re.iloc[0, 0]), 0.0), 0.0
        table = _fit_table(d, "y ~ " + " + ".join(terms))
    var_e = float(fit.scale)
    total = var_a + var_other + var_e
    out.update(testable=True, sd_factor=num(math.sqrt(var_a)), sd_residual=num(math.sqrt(var_e)),
               share=num(var_a / total) if total > 0 else None,
               partial_share=num(var_a / (var_a + var_e)) if var_a + var_e > 0 else None,
               converged=bool(fit.converged), crossed=crossed)
    f_obs, df1, df2 = float(table["F"].iloc[0]), float(table["df"].iloc[0]), float(table["df"].iloc[-1])
    counts = g.value_counts().to_numpy(float)
    n0 = (counts.sum() - np.sum(counts**2) / counts.sum()) / (len(counts) - 1)
    if math.isfinite(f_obs) and df2 > 0:
        lo_f = f_obs / ss.f.ppf(1 - ALPHA / 2, df1, df2)
        hi_f = f_obs / ss.f.ppf(ALPHA / 2, df1, df2)
        ci = [num(max(0.0, (lo_f - 1) / (lo_f + n0 - 1))), num(min(1.0, (hi_f - 1) / (hi_f + n0 - 1)))]
        out["partial_share_ci"] = ci
        out["share_ci"] = ci
        out["p"] = num(table["PR(>F)"].iloc[0])
    if crossed:
        rows = ["C(g)", *[f"C(z{i})" for i in range(len(crossed))], "Residual"]
        levels = [out["levels"], *[int(d[f"z{i}"].nunique()) for i in range(len(crossed))]]
        out["share_ci"] = share_gci([float(table.loc[r, "sum_sq"]) for r in rows],
                                    [float(table.loc[r, "df"]) for r in rows], [len(d) / k for k in levels], 0)
        out["method"] = (f"joint REML with {', '.join(crossed)} (statsmodels MixedLM, crossed variance components); "
                         "partial-share CI from the ANOVA F with the crossed factors in the model (Searle); share CI "
                         "of a single run's variance: generalized confidence interval (Weerahandi)")
    return out
