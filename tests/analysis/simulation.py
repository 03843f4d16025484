"""Simulated studies for the calibration tests (tests/analysis/test_simulation.py) and the long run
(benchmarks/stats_simulation.py). Seeded, numpy/scipy only, vectorised over studies: each design
returns the p-values of the tests the verdict states, one row per simulated study, computed by the
same scipy calls the report makes (f_oneway(equal_var=False) is the Welch ANOVA of statsmodels'
anova_oneway, bartlett the spread claim, ttest_rel the paired t, whose square is the
repeated-measures F of AnovaRM with two levels). test_simulation checks that agreement on real runs tables.

Accuracy unit: fractions; seed noise 0.6 pp (SIGMA) unless stated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as ss

SIGMA = 0.006
ALPHA = 0.05


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values per row (NaN = test not defined, left out of the family)."""
    p = np.asarray(p, float)
    m = np.sum(~np.isnan(p), axis=1, keepdims=True)
    filled = np.where(np.isnan(p), np.inf, p)
    order = np.argsort(filled, axis=1)
    ranked = np.take_along_axis(filled, order, axis=1)
    steps = m - np.arange(p.shape[1])[None, :]
    with np.errstate(invalid="ignore"):
        scaled = np.where(np.isinf(ranked), 0, ranked * steps)
    adj = np.minimum(np.maximum.accumulate(scaled, axis=1), 1.0)
    adj = np.where(np.isinf(ranked), np.nan, adj)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=1)
    return out


def family_rejects(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Per study: did the Holm-controlled family reject anything?"""
    return np.nanmin(np.where(np.isnan(p), np.inf, holm_adjust(p)), axis=1) < alpha


def _welch_bf(groups: list[np.ndarray]) -> np.ndarray:
    """(studies, 2): Welch ANOVA p and Bartlett p (the verdict's mean and spread claims) per study."""
    welch = ss.f_oneway(*groups, axis=1, equal_var=False).pvalue
    spread = ss.bartlett(*groups, axis=1).pvalue
    return np.column_stack([welch, spread])


def factorial_copies(rng: np.random.Generator, studies: int, n: int = 4, copies: int = 3,
                     k: int = 3) -> dict[str, np.ndarray]:
    """k levels × n distinct trainings; level 0 ran with every source fixed so each training appears `copies`×.

    Returns the family p-values on distinct runs and, for contrast, the one-way ANOVA p and the family with the
    copies counted (what a table whose copies carry distinct config_keys got before copies went by weights_hash).
    """
    y = [rng.normal(0.9, SIGMA, (studies, n)) for _ in range(k)]
    counted = [np.repeat(y[0], copies, axis=1), *y[1:]]
    return {"family": _welch_bf(y), "anova_copies_counted": ss.f_oneway(*counted, axis=1).pvalue,
            "family_copies_counted": _welch_bf(counted)}


def paired(rng: np.random.Generator, studies: int, blocks: int = 5, shift: float = 0.0,
           block_sd: float = SIGMA, sigma: float = 0.003) -> dict[str, np.ndarray]:
    """Two levels, replicate r drew the same seeds at both (block effect block_sd), residual sigma."""
    b = rng.normal(0, block_sd, (studies, blocks))
    a = 0.9 + b + rng.normal(0, sigma, (studies, blocks))
    c = 0.9 + shift + b + rng.normal(0, sigma, (studies, blocks))
    t = ss.ttest_rel(c, a, axis=1)
    spread = ss.pearsonr(a + c, c - a, axis=1).pvalue  # Pitman–Morgan, as paired.paired_tests
    ci = t.confidence_interval(0.95)
    return {"family": np.column_stack([t.pvalue, spread]), "bartlett_p": ss.bartlett(a, c, axis=1).pvalue,
            "welch_p": ss.ttest_ind(c, a, axis=1, equal_var=False).pvalue,
            "diff_ci": np.column_stack([ci.low, ci.high])}


def one_at_a_time(rng: np.random.Generator, studies: int, n: int = 5,
                  b_effect: float = 0.02) -> dict[str, np.ndarray]:
    """Base (a0, b0); moves a1, a2 of A; move b1 of B with a real +2 pp effect. A has no effect.

    Family for A on the base runs only; for contrast, A tested with every a0 run pooled (b1 runs included).
    """
    base, a1, a2 = (rng.normal(0.9, SIGMA, (studies, n)) for _ in range(3))
    b1 = rng.normal(0.9 + b_effect, SIGMA, (studies, n))
    pooled = np.concatenate([base, b1], axis=1)
    return {"family": _welch_bf([base, a1, a2]),
            "pooled_base_p": ss.f_oneway(pooled, a1, a2, axis=1, equal_var=False).pvalue}


def failures(rng: np.random.Generator, studies: int, n: int = 10, k: int = 3,
             fail: float = 0.2) -> dict[str, np.ndarray]:
    """k levels × n planned runs, each failing with probability `fail` at every level (null for all tests).

    Family: Welch ANOVA and Bartlett on the finished runs, and the failure test (R × 2 Fisher–Freeman–Halton,
    Monte Carlo: 999 tables here, 9,999 in the report); a level with < 3 finished runs leaves the mean/spread
    tests out of that study's family.
    """
    y = rng.normal(0.9, SIGMA, (studies, k, n))
    ok = rng.random((studies, k, n)) >= fail
    out = np.full((studies, 3), np.nan)
    for s in range(studies):
        groups = [y[s, i][ok[s, i]] for i in range(k)]
        if all(len(g) >= 3 for g in groups):
            out[s, 0] = ss.f_oneway(*groups, equal_var=False).pvalue
            out[s, 1] = ss.bartlett(*groups).pvalue
        failed = (~ok[s]).sum(axis=1)
        if 0 < failed.sum() < k * n:
            table = np.column_stack([failed, n - failed])
            out[s, 2] = ss.fisher_exact(table, method=ss.MonteCarloMethod(n_resamples=999, rng=rng)).pvalue
    return {"family": out}


def mean_std_coverage(rng: np.random.Generator, studies: int, n: int) -> dict[str, float]:
    """Share of studies whose 95% t interval covers the mean and χ² interval covers the std (vectorised)."""
    x = rng.normal(0.9, SIGMA, (studies, n))
    ci = ss.ttest_1samp(x, 0.9, axis=1).confidence_interval(0.95)
    s = x.std(ddof=1, axis=1)
    lo, hi = s * np.sqrt((n - 1) / ss.chi2.ppf(0.975, n - 1)), s * np.sqrt((n - 1) / ss.chi2.ppf(0.025, n - 1))
    return {"mean": float(np.mean((ci.low <= 0.9) & (0.9 <= ci.high))),
            "std": float(np.mean((lo <= SIGMA) & (SIGMA <= hi)))}


def welch_diff_coverage(rng: np.random.Generator, studies: int, n: int, shift: float = 0.02) -> float:
    a, b = rng.normal(0.9, SIGMA, (studies, n)), rng.normal(0.9 + shift, 1.5 * SIGMA, (studies, n))
    ci = ss.ttest_ind(b, a, axis=1, equal_var=False).confidence_interval(0.95)
    return float(np.mean((ci.low <= shift) & (shift <= ci.high)))


def shift_power(rng: np.random.Generator, studies: int, n: int, shift: float = 0.02) -> float:
    """Share of studies where a planted `shift` between 2 levels survives the verdict's Holm family."""
    a, b = rng.normal(0.9, SIGMA, (studies, n)), rng.normal(0.9 + shift, SIGMA, (studies, n))
    adj = holm_adjust(_welch_bf([a, b]))
    return float(np.mean(adj[:, 0] < ALPHA))


def variance_power(rng: np.random.Generator, studies: int, n: int, ratio: float = 3.0) -> float:
    """Share of studies where 3× the variance at one level is found by Bartlett in the Holm family."""
    a, b = rng.normal(0.9, SIGMA, (studies, n)), rng.normal(0.9, SIGMA * np.sqrt(ratio), (studies, n))
    adj = holm_adjust(_welch_bf([a, b]))
    return float(np.mean(adj[:, 1] < ALPHA))


def crossed(rng: np.random.Generator, studies: int, levels: tuple[int, int] = (6, 6), reps: int = 1,
            shares: tuple[float, float] = (0.6, 0.2)) -> dict[str, np.ndarray]:
    """Two crossed seed factors (e.g. order × init) with planted shares of the total variance; the rest is residual.

    Per study and factor: the F of the two-way ANOVA without interaction (balanced: the type-II table
    random_effects fits), its p-value, and Searle's interval for the partial share σ²_f / (σ²_f + σ²_e).
    """
    a, b = levels
    va, vb = shares
    ve = 1 - va - vb
    y = (rng.normal(0, np.sqrt(va), (studies, a, 1, 1)) + rng.normal(0, np.sqrt(vb), (studies, 1, b, 1))
         + rng.normal(0, np.sqrt(ve), (studies, a, b, reps)))
    grand = y.mean(axis=(1, 2, 3), keepdims=True)
    ss_a = b * reps * np.sum((y.mean(axis=(2, 3), keepdims=True) - grand) ** 2, axis=(1, 2, 3))
    ss_b = a * reps * np.sum((y.mean(axis=(1, 3), keepdims=True) - grand) ** 2, axis=(1, 2, 3))
    ss_e = np.sum((y - grand) ** 2, axis=(1, 2, 3)) - ss_a - ss_b
    df_e = a * b * reps - a - b + 1
    out: dict[str, np.ndarray] = {}
    for name, ss_f, df_f, n0, truth in (("a", ss_a, a - 1, b * reps, va / (va + ve)),
                                        ("b", ss_b, b - 1, a * reps, vb / (vb + ve))):
        f = (ss_f / df_f) / (ss_e / df_e)
        lo_f, hi_f = f / ss.f.ppf(0.975, df_f, df_e), f / ss.f.ppf(0.025, df_f, df_e)
        lo = np.maximum(0.0, (lo_f - 1) / (lo_f + n0 - 1))
        hi = np.minimum(1.0, (hi_f - 1) / (hi_f + n0 - 1))
        out[f"{name}_p"] = ss.f.sf(f, df_f, df_e)
        out[f"{name}_covered"] = (lo <= truth) & (truth <= hi)
        out[f"{name}_ci"] = np.column_stack([lo, hi])
    out["y"] = y
    return out


def within_bartlett(ss_levels: list[np.ndarray], df_levels: list[np.ndarray]) -> np.ndarray:
    """Bartlett p per study from each level's within-cell sum of squares and df (analysis.factorial's test)."""
    ssq, nu = np.column_stack(ss_levels), np.column_stack(df_levels).astype(float)
    total, k = nu.sum(axis=1), nu.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (total * np.log(ssq.sum(axis=1) / total) - np.sum(nu * np.log(ssq / nu), axis=1)) / (
            1 + (np.sum(1 / nu, axis=1) - 1 / total) / (3 * (k - 1)))
    return ss.chi2.sf(stat, k - 1)


def two_by_two(rng: np.random.Generator, studies: int, cells: tuple[int, int, int, int] = (8, 8, 8, 8),
               a: float = 0.0, b: float = 0.0, ab: float = 0.0, sigma: float = SIGMA,
               alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """A × B with runs per cell (a0b0, a0b1, a1b0, a1b1), effects a, b and ab (at a1b1 only), equal seed noise.

    The verdict's family per study, as analysis.factorial computes it: [A mean, A spread, B mean, B spread]
    (type-III F = squared t of the marginal-mean contrast with the interaction in the model; Bartlett within
    cells). `ci_a`/`ci_b`: the printed intervals (level 1 − α/4, Bonferroni over the family, t on N − 4 df) of
    level 1 − level 0, with the true marginal differences `truth`. `pooled`: the old one-factor-at-a-time family
    (Welch ANOVA and Bartlett on level groups pooled over the other factor), for contrast.
    """
    shift = {(0, 0): 0.0, (0, 1): b, (1, 0): a, (1, 1): a + b + ab}
    y = {ij: rng.normal(0.9 + shift[ij], sigma, (studies, n)) for ij, n in zip(shift, cells, strict=True)}
    n = {ij: y[ij].shape[1] for ij in y}
    m = {ij: y[ij].mean(axis=1) for ij in y}
    ssq = {ij: ((y[ij] - m[ij][:, None]) ** 2).sum(axis=1) for ij in y}
    df_e = sum(n.values()) - 4
    mse = sum(ssq.values()) / df_e
    se = np.sqrt(mse * sum(1 / v for v in n.values()) / 4)
    d_a = (m[1, 0] + m[1, 1] - m[0, 0] - m[0, 1]) / 2
    d_b = (m[0, 1] + m[1, 1] - m[0, 0] - m[1, 0]) / 2
    p_a, p_b = (2 * ss.t.sf(np.abs(d / se), df_e) for d in (d_a, d_b))
    spread_a = within_bartlett([ssq[0, 0] + ssq[0, 1], ssq[1, 0] + ssq[1, 1]],
                               [np.full(studies, n[0, 0] + n[0, 1] - 2), np.full(studies, n[1, 0] + n[1, 1] - 2)])
    spread_b = within_bartlett([ssq[0, 0] + ssq[1, 0], ssq[0, 1] + ssq[1, 1]],
                               [np.full(studies, n[0, 0] + n[1, 0] - 2), np.full(studies, n[0, 1] + n[1, 1] - 2)])
    half = ss.t.ppf(1 - alpha / 4 / 2, df_e) * se
    level_a = [np.concatenate([y[i, 0], y[i, 1]], axis=1) for i in (0, 1)]
    level_b = [np.concatenate([y[0, j], y[1, j]], axis=1) for j in (0, 1)]
    pooled = np.column_stack([_welch_bf(level_a), _welch_bf(level_b)])[:, [0, 1, 2, 3]]
    return {"family": np.column_stack([p_a, spread_a, p_b, spread_b]), "pooled": pooled,
            "ci_a": np.column_stack([d_a - half, d_a + half]), "ci_b": np.column_stack([d_b - half, d_b + half]),
            "truth": np.array([a + ab / 2, b + ab / 2]), "y": y}


def covered(ci: np.ndarray, truth: float) -> np.ndarray:
    return (ci[:, 0] <= truth) & (truth <= ci[:, 1])


def crossed_share_coverage(rng: np.random.Generator, studies: int, share_ci: Any, reps: int = 1,
                           shares: tuple[float, float] = (0.6, 0.2)) -> np.ndarray:
    """(studies, 2): does `share_ci(sum_sq, df, per_level, target)` (intervals.share_gci) cover each crossed seed
    factor's planted share of a single run's variance? The sums of squares are those of crossed()."""
    r = crossed(rng, studies, reps=reps, shares=shares)
    y = r["y"]
    a, b = y.shape[1], y.shape[2]
    grand = y.mean(axis=(1, 2, 3), keepdims=True)
    ss_a = b * reps * np.sum((y.mean(axis=(2, 3), keepdims=True) - grand) ** 2, axis=(1, 2, 3))
    ss_b = a * reps * np.sum((y.mean(axis=(1, 3), keepdims=True) - grand) ** 2, axis=(1, 2, 3))
    ss_e = np.sum((y - grand) ** 2, axis=(1, 2, 3)) - ss_a - ss_b
    dof = [a - 1, b - 1, a * b * reps - a - b + 1]
    out = np.zeros((studies, 2), bool)
    for s in range(studies):
        for k, (order, truth) in enumerate(((0, shares[0]), (1, shares[1]))):
            sums = [ss_a[s], ss_b[s]] if order == 0 else [ss_b[s], ss_a[s]]
            per = [b * reps, a * reps] if order == 0 else [a * reps, b * reps]
            ci = share_ci([*sums, ss_e[s]], [dof[order], dof[1 - order], dof[2]], per, 0)
            out[s, k] = ci[0] <= truth <= ci[1]
    return out


def crossed_single_run_std(y: np.ndarray) -> tuple[float, float]:
    """A single run's std from a 2-way crossed seed table (a × b, one run per cell): σ²_a + σ²_b + σ²_e from the
    ANOVA mean squares, MS_a/b + MS_b/a + MS_e(1 − 1/a − 1/b), with Satterthwaite's df (analysis.power)."""
    a, b = y.shape
    grand = y.mean()
    ms_a = b * np.sum((y.mean(axis=1) - grand) ** 2) / (a - 1)
    ms_b = a * np.sum((y.mean(axis=0) - grand) ** 2) / (b - 1)
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand
    ms_e = np.sum(resid**2) / ((a - 1) * (b - 1))
    parts = np.array([ms_a / b, ms_b / a, ms_e * (1 - 1 / a - 1 / b)])
    dof = np.array([a - 1, b - 1, (a - 1) * (b - 1)])
    total = parts.sum()
    return float(np.sqrt(total)), float(total**2 / np.sum(parts**2 / dof))


def pilot_then_study(rng: np.random.Generator, studies: int, design: str, recommend: Any,
                     delta: float = 0.01, sigma: float = 0.01, pilot: int = 5,
                     residual_only: bool = False) -> dict[str, float]:
    """Power of the verdict's test at the n a pilot's report recommends for `delta` (issue 30, fixed-n sentence).

    Per study: a pilot (design `two_levels`: 2 × pilot runs; `crossed`: seeds.order × seeds.init 6 × 6 with shares
    0.6 / 0.2 of a single run's variance; `factorial`: 2 × 2 × pilot with effects on A and B), its noise estimate
    (σ̂, df) as the report takes it, `recommend(σ̂, df, tests) -> n per level`, then a fresh study at n per level
    with `delta` planted, tested as the verdict does (Welch + Bartlett in a Holm family of 2; in the 2 × 2 the
    model's family of 4). `residual_only`: the crossed pilot's σ̂ is the residual after seed effects (the old
    sentence's noise). Returns the share of studies whose mean claim survives Holm, and the median n.
    """
    hits, ns = [], []
    for _ in range(studies):
        if design == "two_levels":
            a = rng.normal(0, sigma, (2, pilot))
            s, dof, tests = float(np.sqrt(a.var(ddof=1, axis=1).mean())), 2 * pilot - 2, 2
        elif design == "crossed":
            y = (rng.normal(0, np.sqrt(0.6), (6, 1)) + rng.normal(0, np.sqrt(0.2), (1, 6))
                 + rng.normal(0, np.sqrt(0.2), (6, 6))) * sigma
            s, dof = crossed_single_run_std(y)
            if residual_only:  # the old sentence: the residual after the seed effects (25 df)
                resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
                s, dof = float(np.sqrt(np.sum(resid**2) / 25)), 25
            tests = 2  # seeds only: a future toggle brings its mean and spread tests
        else:
            r = two_by_two(rng, 1, cells=(pilot,) * 4, a=0.02, b=0.01, sigma=sigma)
            resid = np.concatenate([v[0] - v[0].mean() for v in r["y"].values()])
            s, dof, tests = float(np.sqrt(np.sum(resid**2) / (4 * pilot - 4))), 4 * pilot - 4, 4
        n = int(recommend(s, dof, tests))
        ns.append(n)
        if design == "factorial":
            cell = int(np.ceil(n / 2))
            p = two_by_two(rng, 1, cells=(cell,) * 4, a=delta, b=0.01, sigma=sigma)["family"]
        else:
            x, z = rng.normal(0.9, sigma, (1, n)), rng.normal(0.9 + delta, sigma, (1, n))
            p = _welch_bf([x, z])
        hits.append(bool(holm_adjust(p)[0, 0] < ALPHA))
    return {"power": float(np.mean(hits)), "median_n": float(np.median(ns))}


def unused_seed(rng: np.random.Generator, studies: int, n: int = 5, k: int = 3) -> dict[str, np.ndarray]:
    """k levels × n runs; at level 0 every source but one the training never uses is fixed, so its n runs are one
    training under n config_keys. Weights first, level 0 is one distinct run (left out: n < 3) and the family
    tests the other levels; counted by config_key (before), level 0 had zero spread."""
    y = [rng.normal(0.9, SIGMA, (studies, n)) for _ in range(k)]
    copied = [np.repeat(y[0][:, :1], n, axis=1), *y[1:]]
    with np.errstate(all="ignore"):  # Welch is undefined with a zero-spread level: the verdict used the ANOVA
        before = np.column_stack([ss.f_oneway(*copied, axis=1).pvalue, ss.bartlett(*copied, axis=1).pvalue])
    return {"family": _welch_bf(y[1:]), "family_copies_counted": before}
