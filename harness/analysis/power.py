"""How many runs per level a comparison needs, and the smallest difference the study could have seen.

Three things made the old "seeds needed" optimistic (simulated power 0.64–0.72 at its recommended n):
- the noise: a new comparison trains fresh seeds, so it faces a single run's seed noise given the treatments
  (residual of the OLS of the non-seed factors; seed factors stay in it), not the residual after seed effects
  (a crossed seed pilot reported 0.45 pp for runs whose std was 1.00 pp);
- the multiplicity: the verdict's test must pass Holm over the family's m tests; with the other claims null
  that means p < α/m, so power is computed at α/m;
- the estimate: σ comes from a pilot with ν degrees of freedom. n is the smallest with expected power
  (assurance, O'Hagan & Stevens 2001) >= the target, averaging statsmodels' t power over σ² = ν s²/χ²_ν
  (scipy chi2 quantiles); plugging in s itself undershoots on average.
Two-sided two-sample t power (statsmodels TTestIndPower), or paired t (TTestPower) on the std of the paired
differences with n = seed blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.decomposition import RESIDUAL, variance_decomposition
from harness.analysis.runs_table import distinct_runs, factor_columns, factor_roles, seed_value_factor

ALPHA = 0.05
QUADRATURE = 48  # χ² quantiles averaged over for the expected power
N_MAX = 100_000


def noise_faced(df: Any) -> tuple[float | None, float | None, list[str]]:
    """(σ, its df, factors removed): a single run's seed noise given the non-seed factors, from distinct runs.

    With seed-value factors (`seeds.init` = 0, 1, …; crossed ones too) a single run's variance is the sum of
    their components and the residual: from the ANOVA mean squares, Σ MS_f/n_f + MS_e·(1 − Σ 1/n_f) (n_f runs per
    level), with Satterthwaite's df (a 6-level seed factor carrying most of the variance leaves ~5 df, not 35).
    """
    roles = factor_roles(df)
    fin = distinct_runs(df)
    fixed = [f for f in factor_columns(df) if roles[f] != "seed_source"]
    seeds = [f for f in factor_columns(df) if seed_value_factor(fin, f, roles) and fin[f].nunique() > 1]
    if seeds:
        return _components(fin, [f for f in fixed if fin[f].nunique() > 1], seeds)
    dec = variance_decomposition(df, fixed) if fixed else {"testable": False, "factors": []}
    if dec["testable"]:
        resid = next(t for t in dec["terms"] if t["term"] == RESIDUAL)
        return dec["residual_std"], resid["df"], dec["factors"]
    acc = fin["accuracy"].to_numpy(float)
    if len(acc) < 2:
        return None, None, []
    return float(np.std(acc, ddof=1)), float(len(acc) - 1), []


def _components(fin: Any, fixed: list[str], seeds: list[str]) -> tuple[float | None, float | None, list[str]]:
    """Single-run variance from seed components (ANOVA estimates, statsmodels anova_lm) with Satterthwaite df."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    cols = [*fixed, *seeds]
    d = pd.DataFrame({"y": fin["accuracy"].to_numpy(float),
                      **{f"x{i}": fin[f].astype(str).to_numpy() for i, f in enumerate(cols)}})
    with quiet():
        fit = smf.ols("y ~ " + " + ".join(f"C(x{i})" for i in range(len(cols))), data=d).fit()
        table = anova_lm(fit, typ=2)
    if not fit.df_resid >= 1:
        return None, None, fixed
    ms = (table["sum_sq"] / table["df"]).to_numpy(float)
    dof = table["df"].to_numpy(float)
    weights = np.zeros(len(table))
    for i in range(len(fixed), len(cols)):
        weights[i] = d[f"x{i}"].nunique() / len(d)  # 1 / runs per level
    weights[-1] = 1 - weights.sum()
    total = float(np.sum(weights * ms))
    if not total > 0 or weights[-1] < 0:
        return num(np.sqrt(ms[-1])), num(dof[-1]), fixed
    satterthwaite = total**2 / float(np.sum((weights * ms) ** 2 / dof))
    return float(np.sqrt(total)), satterthwaite, fixed


def _expected_power(calc: Any, key: str, extra: dict[str, Any], delta: float, sigma: float,
                    sigma_df: float | None, n: int, alpha: float) -> float:
    """t power at n, averaged over the σ the pilot's s is compatible with (ν s²/χ²_ν); plain when ν is unknown."""
    if sigma_df is None or not sigma_df > 0:
        sigmas = np.array([sigma])
    else:
        q = ss.chi2.ppf((np.arange(QUADRATURE) + 0.5) / QUADRATURE, sigma_df)
        sigmas = sigma * np.sqrt(sigma_df / q)
    with quiet():
        powers = np.asarray(calc.power(delta / sigmas, alpha=alpha, **{key: n}, **extra), float)
    # scipy's noncentral t gives NaN only far in the upper tail (noncentrality ~14 and beyond): power 1 there
    return float(np.mean(np.nan_to_num(powers, nan=1.0)))


def seeds_needed(df: Any, factor: str | None = None, *, sigma: float | None = None, sigma_df: float | None = None,
                 n_per_group: int | None = None, alpha: float = ALPHA, power: float = 0.8,
                 delta_pp: float | None = None, paired_sd: float | None = None, tests: int = 1) -> dict[str, Any]:
    """Smallest detectable difference (pp) at the study's n, and runs per level for delta_pp at `power`.

    sigma defaults to noise_faced(df) (or the one-way residual of `factor` when given), with its df; n per
    level defaults to the smallest level of `factor`, else of the varied treatments. `tests`: the size of the
    verdict's Holm family (power at α/tests). `paired_sd` (std of paired differences) switches to paired t.
    """
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if paired_sd is not None:
        sigma = paired_sd
    if sigma is None:
        if factor:
            dec = variance_decomposition(df, [factor])
            sigma = dec["residual_std"]
            sigma_df = next((t["df"] for t in dec["terms"] if t["term"] == RESIDUAL), None) if dec["testable"] else None
        else:
            sigma, sigma_df, _ = noise_faced(df)
    if n_per_group is None:
        fin, roles = distinct_runs(df), factor_roles(df)
        varied = [c for c in factor_columns(df) if fin[c].astype(str).nunique() > 1]
        cols = [factor] if factor else [c for c in varied if roles[c] == "treatment"]
        sizes = [int(fin[c].astype(str).value_counts().min()) for c in cols if c in fin.columns and len(fin)]
        n_per_group = min(sizes) if sizes else (len(fin) or None)  # no treatment varied: every run is a replicate
    level = alpha / max(tests, 1)
    out: dict[str, Any] = {"factor": factor, "sigma": num(sigma), "sigma_pp": num(100 * sigma) if sigma else None,
                           "sigma_df": num(sigma_df), "n_per_group": n_per_group, "alpha": alpha,
                           "tests": max(tests, 1), "alpha_per_test": level, "power": power,
                           "design": "paired" if paired_sd is not None else "independent",
                           "mde_pp": None, "delta_pp": delta_pp, "n_needed": None, "power_at_delta": None, "note": ""}
    if sigma is None:
        out["note"] = "no residual std: needs a replicated design"
        return out
    if sigma == 0:
        out["note"] = "no seed noise in the replicates (identical values): no power to compute"
        return out
    calc, extra = (TTestPower(), {}) if paired_sd is not None else (TTestIndPower(), {"ratio": 1.0})
    key = "nobs" if paired_sd is not None else "nobs1"
    with quiet():
        if n_per_group and n_per_group >= 2:
            d = calc.solve_power(effect_size=None, alpha=level, power=power, **{key: n_per_group}, **extra)
            out["mde_pp"] = num(100 * float(np.squeeze(d)) * sigma)
    if delta_pp:
        delta = delta_pp / 100
        expected = lambda n: _expected_power(calc, key, extra, delta, sigma, sigma_df, n, level)  # noqa: E731
        lo, hi = 2, 4
        while expected(hi) < power and hi < N_MAX:
            lo, hi = hi, hi * 2
        if expected(hi) >= power:
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if expected(mid) >= power else (mid + 1, hi)
            out["n_needed"] = int(hi)
        if n_per_group and n_per_group >= 2:
            out["power_at_delta"] = num(expected(n_per_group))
    return out

