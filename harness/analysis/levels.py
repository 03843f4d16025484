"""Per-factor statistics on a runs table: level summaries, spread tests, mean tests, quick summary.

Every statistic comes from scipy or statsmodels; this module only selects the runs, guards the
degenerate cases (one level, too few runs, identical values) and returns JSON-ready dicts.
Accuracies stay fractions in [0, 1]; texts show percent / percentage points (pp).
Only FINISHED runs enter; levels with fewer than MIN_N runs are excluded from tests and named.
Bit-identical copies count once (runs_table.distinct_runs); in one-at-a-time designs a factor is
compared on the base runs only (structure.rows_for). Small-n intervals: t for means, chi-square for
stds (harness.analysis.intervals); paired designs are analysed in harness.analysis.paired.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.common import fmt_p, num, quiet  # noqa: F401  (re-exported)
from harness.analysis.intervals import mean_ci, std_ci
from harness.analysis.multiplicity import holm  # noqa: F401  (re-exported)
from harness.analysis.paired import paired_tests
from harness.analysis.runs_table import copies_unknown, factor_columns, finished_runs
from harness.analysis.structure import base_level, compared_pairs, labels, rows_for

MIN_N = 3
ALPHA = 0.05
IDENTICAL_REPLICATES = ("not testable: the replicates within every level are identical (zero spread is not seed "
                        "noise to test against; without weights_hash copies cannot be told from trainings)")


def groups_of(df: pd.DataFrame, factor: str) -> dict[str, np.ndarray]:
    """Accuracies of distinct finished runs per level of `factor`, levels in order of first appearance.

    Bit-identical copies count once; one-at-a-time designs keep only the runs that compare this factor.
    """
    fin = rows_for(df, factor)
    if factor not in fin.columns:
        return {}
    return {str(k): g.to_numpy(float) for k, g in fin["accuracy"].groupby(labels(fin, factor), sort=False)}


def testable_groups(groups: dict[str, np.ndarray], copies_unknown: bool = False
                    ) -> tuple[dict[str, np.ndarray], list[str], str | None]:
    """Split levels into usable (n >= MIN_N) and excluded; give the reason when nothing is testable.

    copies_unknown (no weights_hash): identical values within every level may be one training copied, so
    nothing is tested; with distinct hashes they are distinct trainings that landed on the same accuracy.
    """
    used = {k: v for k, v in groups.items() if len(v) >= MIN_N}
    excluded = [k for k, v in groups.items() if len(v) < MIN_N]
    if len(groups) < 2:
        return used, excluded, "not testable: single level (a constant)"
    if len(used) < 2:
        return used, excluded, f"not testable: too few runs (need >= {MIN_N} runs in >= 2 levels)"
    values = np.concatenate(list(used.values()))
    if np.ptp(values) == 0:
        return used, excluded, "not testable: all values identical"
    if all(np.ptp(v) == 0 for v in used.values()):
        return used, excluded, IDENTICAL_REPLICATES if copies_unknown else None
    return used, excluded, None


def level_summary(df: pd.DataFrame, factor: str, *, ci: bool = True) -> list[dict[str, Any]]:
    """Per level: n, mean, std (ddof=1), min, max, 95% t interval of the mean and chi-square interval of the std.

    CIs need n >= 2 (a note says when n < MIN_N keeps the level out of the tests); with identical values the
    mean CI collapses to the value and the std CI is [0, 0] (note says so).
    """
    out = []
    for level, x in groups_of(df, factor).items():
        row: dict[str, Any] = {"level": level, "n": int(len(x)), "mean": num(np.mean(x)),
                               "std": num(np.std(x, ddof=1)) if len(x) > 1 else None,
                               "min": num(np.min(x)), "max": num(np.max(x)),
                               "mean_ci": None, "std_ci": None, "note": ""}
        if len(x) < 2:
            row["note"] = f"too few runs for a CI (n={len(x)} < 2)"
        elif np.ptp(x) == 0:
            row.update(mean_ci=[row["mean"], row["mean"]], std_ci=[0.0, 0.0], note="all values identical")
        elif ci:
            row["mean_ci"], row["std_ci"] = mean_ci(x), std_ci(x)
        if 2 <= len(x) < MIN_N:
            row["note"] = f"not tested (n={len(x)} < {MIN_N})"
        out.append(row)
    return out


def _test(result: Any) -> dict[str, float | None]:
    """Statistic and p of a scipy result; non-finite values (zero spread) become None."""
    return {"statistic": num(result[0]), "p": num(result[1])}


def variance_tests(df: pd.DataFrame, factor: str) -> dict[str, Any]:
    """Does the spread differ between levels? Bartlett, Brown–Forsythe, Levene (mean-centred), Fligner–Killeen.

    Bartlett has exact size under normal seed noise at any n (the verdict uses it); Brown–Forsythe is the
    robust check but is far below its nominal size at small odd n (0.004 at 3 levels × 5 runs).
    """
    used, excluded, reason = testable_groups(groups_of(df, factor), copies_unknown(df))
    out: dict[str, Any] = {"factor": factor, "levels": list(used), "excluded_levels": excluded,
                           "testable": reason is None, "reason": reason,
                           "bartlett": None, "brown_forsythe": None, "levene": None, "fligner": None}
    if reason is not None:
        return out
    samples = list(used.values())
    if all(np.ptp(s) == 0 for s in samples):
        out.update(testable=False, reason="not testable: no spread within any level")
        return out
    with quiet():
        out["bartlett"] = _test(ss.bartlett(*samples))
        out["brown_forsythe"] = _test(ss.levene(*samples, center="median"))
        out["levene"] = _test(ss.levene(*samples, center="mean"))
        out["fligner"] = _test(ss.fligner(*samples, center="median"))
    return out


def omega_squared(f_stat: float | None, k: int, n: int) -> float | None:
    """Unbiased share of variance between levels from the one-way F: (k−1)(F−1) / ((k−1)(F−1) + N) (Hays).

    Unlike η² it does not grow with the number of levels under the null; it can be negative (reported as is).
    """
    if f_stat is None or k < 2 or n <= k:
        return None
    top = (k - 1) * (f_stat - 1)
    return num(top / (top + n))


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
                           "mean_diff": num(np.mean(a) - np.mean(b)), "ci": None, "se": None,
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
        row["se"] = num(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))
        pooled = ((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / (len(a) + len(b) - 2)
        if pooled > 0:
            row["cohens_d"] = num((np.mean(a) - np.mean(b)) / np.sqrt(pooled))
    return row


def mean_tests(df: pd.DataFrame, factor: str, *, pairwise: bool = True,
               effect_size: bool = True) -> dict[str, Any]:
    """Do the means differ? One-way ANOVA, Welch ANOVA, Kruskal–Wallis, η², ω², Holm-corrected pairs.

    When the design is paired (seed blocks holding every level), `paired` holds the blocked analysis
    (repeated-measures ANOVA, paired t); the verdict then uses it instead of the independent tests.

    effect_size=False skips the OLS fit behind eta² (for simulations that only need p-values).
    """
    from statsmodels.stats.oneway import anova_oneway

    used, excluded, reason = testable_groups(groups_of(df, factor), copies_unknown(df))
    out: dict[str, Any] = {"factor": factor, "levels": list(used), "excluded_levels": excluded,
                           "testable": reason is None, "reason": reason, "anova": None, "welch": None,
                           "kruskal": None, "eta_squared": None, "omega_squared": None, "pairwise": [],
                           "paired": None, "base": base_level(df, factor)}
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
    n_total = out["anova"]["df_denom"] + len(samples)
    out["omega_squared"] = omega_squared(out["anova"]["statistic"], len(samples), n_total)
    out["paired"] = paired_tests(df, factor)
    if effect_size:
        out["eta_squared"] = eta_squared(used)
    if pairwise:
        rows = [pairwise_comparison(a, used[a], b, used[b]) for a, b in compared_pairs(df, factor, list(used))]
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
