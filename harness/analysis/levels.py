"""Per-factor statistics on a runs table: level summaries, spread tests, mean tests, quick summary.

Every statistic comes from scipy or statsmodels; this module only selects the runs, guards the
degenerate cases (one level, too few runs, identical values) and returns JSON-ready dicts.
Accuracies stay fractions in [0, 1]; texts show percent / percentage points (pp).
Only FINISHED runs enter; levels with fewer than MIN_N runs are excluded from tests and named.
Design-level analyses (decomposition, random effects, power, bit-identity) live in
harness.stats_design and are re-exported here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.runs_table import factor_columns, finished_runs

MIN_N = 3
ALPHA = 0.05
N_RESAMPLES = 9999


@contextmanager
def quiet() -> Iterator[None]:
    """Silence scipy/statsmodels/numpy warnings: degenerate cases are reported as notes instead."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def num(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None become None."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_p(p: float | None, name: str = "p") -> str:
    """p-value text: 'p n/a' when untestable, 'p<0.0001' when tiny, else 'p=0.0123'."""
    if p is None:
        return f"{name} n/a"
    return f"{name}<0.0001" if p < 1e-4 else f"{name}={p:.3g}"


def groups_of(df: pd.DataFrame, factor: str) -> dict[str, np.ndarray]:
    """Accuracies of FINISHED runs per level of `factor`, levels in order of first appearance."""
    fin = finished_runs(df)
    if factor not in fin.columns:
        return {}
    labels = fin[factor].map(lambda v: "" if pd.isna(v) else str(v))
    return {str(k): g.to_numpy(float) for k, g in fin["accuracy"].groupby(labels, sort=False)}


def testable_groups(groups: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], str | None]:
    """Split levels into usable (n >= MIN_N) and excluded; give the reason when nothing is testable."""
    used = {k: v for k, v in groups.items() if len(v) >= MIN_N}
    excluded = [k for k, v in groups.items() if len(v) < MIN_N]
    if len(groups) < 2:
        return used, excluded, "not testable: single level (a constant)"
    if len(used) < 2:
        return used, excluded, f"not testable: too few runs (need >= {MIN_N} runs in >= 2 levels)"
    values = np.concatenate(list(used.values()))
    if np.ptp(values) == 0:
        return used, excluded, "not testable: all values identical"
    return used, excluded, None


def _bootstrap_ci(x: np.ndarray, stat: str, n_resamples: int) -> list[float | None] | None:
    """95% bootstrap CI (BCa, percentile fallback) of the mean or sample std; fixed rng: reproducible."""
    if stat == "mean":
        def fn(a: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(a, axis=axis)
    else:
        def fn(a: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.std(a, ddof=1, axis=axis)
    for method in ("BCa", "percentile"):
        with quiet():
            res = ss.bootstrap((x,), fn, n_resamples=n_resamples, vectorized=True, method=method,
                               rng=np.random.default_rng(0))
        lo, hi = num(res.confidence_interval.low), num(res.confidence_interval.high)
        if lo is not None and hi is not None:
            return [lo, hi]
    return None


def level_summary(df: pd.DataFrame, factor: str, *, ci: bool = True,
                  n_resamples: int = N_RESAMPLES) -> list[dict[str, Any]]:
    """Per level: n, mean, std (ddof=1), min, max and bootstrap 95% CIs of mean and std.

    CIs need n >= MIN_N; with identical values the CI collapses to the value (note says so).
    """
    out = []
    for level, x in groups_of(df, factor).items():
        row: dict[str, Any] = {"level": level, "n": int(len(x)), "mean": num(np.mean(x)),
                               "std": num(np.std(x, ddof=1)) if len(x) > 1 else None,
                               "min": num(np.min(x)), "max": num(np.max(x)),
                               "mean_ci": None, "std_ci": None, "note": ""}
        if len(x) < MIN_N:
            row["note"] = f"too few runs for a CI (n={len(x)} < {MIN_N})"
        elif np.ptp(x) == 0:
            row.update(mean_ci=[row["mean"], row["mean"]], std_ci=[0.0, 0.0], note="all values identical")
        elif ci:
            row["mean_ci"] = _bootstrap_ci(x, "mean", n_resamples)
            row["std_ci"] = _bootstrap_ci(x, "std", n_resamples)
        out.append(row)
    return out


def _test(result: Any) -> dict[str, float | None]:
    """Statistic and p of a scipy result; non-finite values (zero spread) become None."""
    return {"statistic": num(result[0]), "p": num(result[1])}


def variance_tests(df: pd.DataFrame, factor: str) -> dict[str, Any]:
    """Does the spread differ between levels? Brown–Forsythe, Levene (mean-centred), Fligner–Killeen."""
    used, excluded, reason = testable_groups(groups_of(df, factor))
    out: dict[str, Any] = {"factor": factor, "levels": list(used), "excluded_levels": excluded,
                           "testable": reason is None, "reason": reason,
                           "brown_forsythe": None, "levene": None, "fligner": None}
    if reason is not None:
        return out
    samples = list(used.values())
    if all(np.ptp(s) == 0 for s in samples):
        out.update(testable=False, reason="not testable: no spread within any level")
        return out
    with quiet():
        out["brown_forsythe"] = _test(ss.levene(*samples, center="median"))
        out["levene"] = _test(ss.levene(*samples, center="mean"))
        out["fligner"] = _test(ss.fligner(*samples, center="median"))
    return out


def eta_squared(groups: dict[str, np.ndarray]) -> float | None:
    """Share of the total sum of squares between levels, from statsmodels' one-way ANOVA table."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    d = pd.DataFrame({"y": np.concatenate(list(groups.values())),
                      "g": np.repeat(list(groups), [len(v) for v in groups.values()])})
    with quiet():
        table = anova_lm(smf.ols("y ~ C(g)", data=d).fit(), typ=2)
    return num(table["sum_sq"].iloc[0] / table["sum_sq"].sum())


def pairwise_comparison(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> dict[str, Any]:
    """Welch t with mean-difference CI, Mann–Whitney U, Cohen's d and Cliff's delta for one pair."""
    row: dict[str, Any] = {"a": a_name, "b": b_name, "n_a": int(len(a)), "n_b": int(len(b)),
                           "mean_diff": num(np.mean(a) - np.mean(b)), "ci": None,
                           "welch_t": None, "welch_df": None, "welch_p": None,
                           "mw_u": None, "mw_p": None, "cohens_d": None, "cliffs_delta": None, "note": ""}
    with quiet():
        if np.ptp(np.concatenate([a, b])) == 0:
            row["note"] = "all values identical"
            return row
        t = ss.ttest_ind(a, b, equal_var=False)
        if num(t.pvalue) is not None:
            ci = t.confidence_interval(0.95)
            row.update(welch_t=num(t.statistic), welch_df=num(t.df), welch_p=num(t.pvalue),
                       ci=[num(ci.low), num(ci.high)])
        else:
            row["note"] = "Welch t undefined: no spread within either level"
        mw = ss.mannwhitneyu(a, b, alternative="two-sided")
        row.update(mw_u=num(mw.statistic), mw_p=num(mw.pvalue),
                   cliffs_delta=num(2 * mw.statistic / (len(a) * len(b)) - 1))
        pooled = ((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / (len(a) + len(b) - 2)
        if pooled > 0:
            row["cohens_d"] = num((np.mean(a) - np.mean(b)) / np.sqrt(pooled))
    return row


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels multipletests); None entries stay None and are not counted."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        adj = multipletests([pvalues[i] for i in idx], alpha=ALPHA, method="holm")[1]
        for i, p in zip(idx, adj, strict=True):
            out[i] = num(p)
    return out


def mean_tests(df: pd.DataFrame, factor: str, *, pairwise: bool = True,
               effect_size: bool = True) -> dict[str, Any]:
    """Do the means differ? One-way ANOVA, Welch ANOVA, Kruskal–Wallis, eta², Holm-corrected pairs.

    effect_size=False skips the OLS fit behind eta² (for simulations that only need p-values).
    """
    from statsmodels.stats.oneway import anova_oneway

    used, excluded, reason = testable_groups(groups_of(df, factor))
    out: dict[str, Any] = {"factor": factor, "levels": list(used), "excluded_levels": excluded,
                           "testable": reason is None, "reason": reason, "anova": None, "welch": None,
                           "kruskal": None, "eta_squared": None, "pairwise": []}
    if reason is not None:
        return out
    samples = list(used.values())
    with quiet():
        f = ss.f_oneway(*samples)
        out["anova"] = {"statistic": num(f.statistic), "p": num(f.pvalue), "df_num": len(samples) - 1,
                        "df_denom": int(sum(len(s) for s in samples) - len(samples))}
        if all(np.ptp(s) > 0 for s in samples):
            w = anova_oneway(samples, use_var="unequal")
            out["welch"] = {"statistic": num(w.statistic), "p": num(w.pvalue),
                            "df_num": num(w.df_num), "df_denom": num(w.df_denom)}
        else:
            out["welch"] = {"statistic": None, "p": None, "df_num": None, "df_denom": None,
                            "note": "Welch ANOVA undefined: a level has no spread"}
        out["kruskal"] = _test(ss.kruskal(*samples))
    if effect_size:
        out["eta_squared"] = eta_squared(used)
    if pairwise:
        rows = [pairwise_comparison(a, used[a], b, used[b]) for a, b in combinations(used, 2)]
        for key in ("welch_p", "mw_p"):
            for row, p in zip(rows, holm([r[key] for r in rows]), strict=True):
                row[key + "_holm"] = p
        out["pairwise"] = rows
    return out


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def quick_summary(df: pd.DataFrame, factors: list[str] | None = None) -> str:
    """Short text for the end of `harness run`: per varied factor, mean ± std (n) per level and p-values."""
    fin = finished_runs(df)
    n_bad = len(df) - len(fin)
    lines = [f"Runs: {len(fin)} finished" + (f", {n_bad} failed/killed/invalid (excluded)" if n_bad else "")]
    if len(fin):
        lines[0] += f"; accuracy {_pct(fin['accuracy'].mean())} ± {_pct(fin['accuracy'].std(ddof=1))} %"
    factors = list(factor_columns(df)) if factors is None else list(factors)
    constants = []
    for factor in factors:
        if factor not in df.columns:
            lines.append(f"{factor}: not in the runs table")
            continue
        summary = level_summary(df, factor, ci=False)
        if len(summary) < 2:
            constants.append(f"{factor}={summary[0]['level']}" if summary else factor)
            continue
        lines.append(f"{factor} ({len(summary)} levels)")
        width = max(len(r["level"]) for r in summary)
        for r in summary:
            lines.append(f"  {r['level']:<{width}}  {_pct(r['mean'])} ± {_pct(r['std'])} %  (n={r['n']})")
        var, mean = variance_tests(df, factor), mean_tests(df, factor, pairwise=False, effect_size=False)
        if var["testable"] or mean["testable"]:
            bf = var["brown_forsythe"] or {}
            lines.append(f"  spread: Brown–Forsythe {fmt_p(bf.get('p'))} · means: "
                         f"ANOVA {fmt_p(mean['anova']['p'])}, Kruskal {fmt_p(mean['kruskal']['p'])}")
        else:
            lines.append(f"  tests: {mean['reason']}")
        if mean["excluded_levels"]:
            lines.append(f"  excluded (n < {MIN_N}): {', '.join(mean['excluded_levels'])}")
    if constants:
        lines.append("Constants: " + ", ".join(constants))
    return "\n".join(lines)


_LAZY = {"variance_decomposition": "stats_design", "random_effects": "stats_design",
         "seeds_needed": "stats_design", "identical_groups": "stats_repro", "determinism_cost": "stats_repro"}


def __getattr__(name: str) -> Any:
    """Lazy re-export of the design-level analyses so `from harness.stats import X` works for all."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"harness.{_LAZY[name]}"), name)
    raise AttributeError(name)
