"""Seeds until the answer is known: which comparisons a runs table has settled, and how many seeds the rest need.

`decide(table, resolution_pp)` is the one rule the runner (rounds of seeds), the report (`report --resolution-pp`)
and any team's runs table share. Each comparison of two levels of a treatment gets an interval for the difference
of their mean accuracies that holds at every number of seeds at once (a confidence sequence), so looking after
every round and stopping when it is settled keeps the error rate:

- settled as **no effect larger than resolution_pp** when it lies inside ±resolution_pp;
- settled as **an effect** when it excludes 0 (and is not inside ±resolution_pp: a difference smaller than the
  resolution asked about is reported as such, with its interval);
- open otherwise, with `more_seeds`: the seeds per level after which it would settle if the estimates held
  (at least 1), capped by `max_repeats`.

The interval is Lai's (1976) t confidence sequence: the scale-invariant Bayes factor of the t statistic with a
N(0, g) prior on the standardised effect and the right-Haar prior 1/σ on the seed noise (Rouder et al. 2009;
Gönen et al. 2005 for two samples) is a test martingale under the null (Pérez-Ortiz et al. 2024), so by Ville's
inequality it exceeds 1/α at any time with probability ≤ α, and {μ : BF(μ) < 1/α} covers μ at every n at once
(exact under normal seed noise; Wang & Ramdas 2025). Paired on the per-block differences where the design shares
seeds (`seed_block`), else two-sample with pooled variance. The intervals of all looks are intersected (still a
confidence sequence), so a settled comparison stays settled. The family: every comparison `decide` states,
Bonferroni (α/m each), which keeps the simultaneous coverage of m confidence sequences; g grows as α/m shrinks
(mixture_g), so 3 paired seeds can settle a large effect in any family.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.common import num
from harness.analysis.runs_table import distinct_runs, factor_roles, finished_runs
from harness.analysis.structure import MIN_BLOCKS, compared_pairs, labels, rows_for
from harness.errors import HarnessError

G = 10.0  # prior variance of the standardised effect at alpha 0.05; mixture_g scales it with the level (methods.md)
MIN_SEEDS = 2  # one seed has no spread: the first look needs two


def mixture_g(alpha: float) -> float:
    """The mixture's prior variance for intervals at level 1 − alpha: G at 0.05, G·0.05/alpha below.

    With n paired seeds the boundary is finite only where 1 + n·g > 1/alpha; scaling g with 1/alpha keeps the first
    look at 3 paired seeds finite however many comparisons share alpha (Bonferroni).
    """
    return G * 0.05 / alpha


def log_bayes_factor(t: np.ndarray | float, n_eff: np.ndarray | float, df: np.ndarray | float,
                     g: float = G) -> np.ndarray:
    """log BF10 of the t statistic with δ ~ N(0, g): −½log(1+n_eff·g) + (df+1)/2·log[(1+t²/df)/(1+t²/(df(1+n_eff·g)))].

    n_eff is n for one sample (paired differences) and n_a·n_b/(n_a+n_b) for two; df is n−1 or n_a+n_b−2.
    """
    t2, n_eff, df = np.square(t), np.asarray(n_eff, float), np.asarray(df, float)
    spread = 1 + n_eff * g
    return -0.5 * np.log(spread) + (df + 1) / 2 * (np.log1p(t2 / df) - np.log1p(t2 / (df * spread)))


def t_boundary(n_eff: np.ndarray | float, df: np.ndarray | float, alpha: float, g: float = G) -> np.ndarray:
    """The |t| at which the Bayes factor reaches 1/α (closed form); inf where no finite |t| reaches it."""
    n_eff, df = np.asarray(n_eff, float), np.asarray(df, float)
    spread = 1 + n_eff * g
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = np.exp((2 * np.log(1 / alpha) + np.log(spread)) / (df + 1))
        x = (a - 1) / (1 - a / spread)
        out = np.sqrt(df * x)
    return np.where((df > 0) & (a < spread), out, np.inf)


def intersect(est: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running intersection over looks (last axis) of est ± half: still a confidence sequence, and monotone."""
    lo = np.fmax.accumulate(np.where(np.isfinite(half), est - half, -np.inf), axis=-1)
    hi = np.fmin.accumulate(np.where(np.isfinite(half), est + half, np.inf), axis=-1)
    return lo, hi


def paired_looks(d: np.ndarray, alpha: float, g: float = G) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per look k (last axis: blocks in the order they were trained): mean difference and the intersected interval.

    Looks before MIN_SEEDS blocks are (-inf, inf). Vectorised over leading axes (the simulations' studies).
    """
    d = np.asarray(d, float)
    n = np.arange(1, d.shape[-1] + 1)
    mean = np.cumsum(d, axis=-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.cumsum(d * d, axis=-1) - n * mean**2) / (n - 1)
        se = np.sqrt(np.clip(var, 0, None) / n)
        half = np.where(n >= MIN_SEEDS, t_boundary(n, n - 1, alpha, g) * se, np.inf)
    lo, hi = intersect(mean, half)
    return mean, lo, hi


def two_sample_looks(n_a: np.ndarray, n_b: np.ndarray, mean_a: np.ndarray, mean_b: np.ndarray,
                     ss_a: np.ndarray, ss_b: np.ndarray, alpha: float,
                     g: float = G) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per look (last axis): difference a − b and the intersected interval, pooled variance (ss: sums of squares)."""
    n_a, n_b = np.asarray(n_a, float), np.asarray(n_b, float)
    diff = np.asarray(mean_a, float) - np.asarray(mean_b, float)
    df = n_a + n_b - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (np.asarray(ss_a, float) + np.asarray(ss_b, float)) / df
        n_eff = n_a * n_b / (n_a + n_b)
        se = np.sqrt(np.clip(pooled, 0, None) / n_eff)
        ok = (n_a >= 1) & (n_b >= 1) & (df >= 1)
        half = np.where(ok, t_boundary(n_eff, df, alpha, g) * se, np.inf)
    lo, hi = intersect(diff, half)
    return diff, lo, hi


def two_sample_balanced(a: np.ndarray, b: np.ndarray, alpha: float,
                        g: float = G) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """two_sample_looks for two levels that gain one seed each per look (columns in training order)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = np.arange(1, a.shape[-1] + 1)
    stats = []
    for x in (a, b):
        mean = np.cumsum(x, axis=-1) / n
        stats.append((mean, np.clip(np.cumsum(x * x, axis=-1) - n * mean**2, 0, None)))
    return two_sample_looks(n, n, stats[0][0], stats[1][0], stats[0][1], stats[1][1], alpha, g)


def settle(lo: float, hi: float, resolution: float) -> str:
    """no_effect (inside ±resolution: whatever the difference is, it is smaller than the resolution asked about,
    even where the interval excludes 0), effect (excludes 0 and reaches beyond the resolution), or open."""
    if -resolution < lo and hi < resolution:
        return "no_effect"
    if lo > 0 or hi < 0:
        return "effect"
    return "open"


def _order(rows: pd.DataFrame) -> pd.Series:
    """Training order of rows: the replicate index where the table has one, else row order."""
    if "replicate" in rows.columns:
        rep = pd.to_numeric(rows["replicate"], errors="coerce")
        if rep.notna().all():
            return rep.astype(float)
    return pd.Series(np.arange(len(rows), dtype=float), index=rows.index)


def _paired_diffs(rows: pd.DataFrame, level: pd.Series, a: str, b: str) -> np.ndarray | None:
    """Per shared seed block (in training order), mean of a minus mean of b; None when < MIN_BLOCKS are shared."""
    if "seed_block" not in rows.columns:
        return None
    d = pd.DataFrame({"block": rows["seed_block"].astype(str), "level": level, "y": rows["accuracy"].astype(float),
                      "order": _order(rows)})
    d = d[(d["block"] != "") & d["level"].isin([a, b])]
    cells = d.groupby(["block", "level"])["y"].mean().unstack()
    if a not in cells.columns or b not in cells.columns:
        return None
    cells = cells.dropna()
    if len(cells) < MIN_BLOCKS:
        return None
    when = d.groupby("block")["order"].min().reindex(cells.index)
    cells = cells.loc[when.sort_values(kind="stable").index]
    return (cells[a] - cells[b]).to_numpy(float)


def _two_sample(y: pd.Series, order: pd.Series, level: pd.Series, a: str, b: str,
                alpha: float) -> tuple[float, float, float]:
    """Looks at each distinct training index (replicate): the two-sample interval of every prefix, intersected."""
    stats: dict[str, list[np.ndarray]] = {}
    steps = np.unique(order[level.isin([a, b])].to_numpy(float))
    for name in (a, b):
        x, when = y[level == name].to_numpy(float), order[level == name].to_numpy(float)
        upto = when[None, :] <= steps[:, None]
        n = upto.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (upto * x).sum(axis=1) / n
            ss = np.where(upto, (x[None, :] - mean[:, None]) ** 2, 0).sum(axis=1)
        stats[name] = [n, mean, ss]
    diff, lo, hi = two_sample_looks(stats[a][0], stats[b][0], stats[a][1], stats[b][1], stats[a][2], stats[b][2],
                                    alpha, mixture_g(alpha))
    return float(diff[-1]), float(lo[-1]), float(hi[-1])


def _more_seeds(diff: float, sd: float, n: int, paired: bool, state: str, resolution: float, alpha: float,
                max_repeats: int) -> int:
    """Seeds per level after which the interval, at today's estimate and noise, would settle (≥ 1 while open)."""
    left = max(0, max_repeats - n)
    if state != "open" or left == 0:
        return 0
    for extra in range(1, left + 1):
        m = n + extra
        n_eff, df = (m, m - 1) if paired else (m / 2, 2 * m - 2)
        half = float(t_boundary(n_eff, df, alpha, mixture_g(alpha))) * sd / np.sqrt(n_eff)
        if abs(diff) > half or abs(diff) + half < resolution:
            return extra
    return left


def _comparison(rows: pd.DataFrame, factor: str, a: str, b: str, alpha: float, resolution: float,
                max_repeats: int) -> dict[str, Any]:
    level = labels(rows, factor)
    y = rows["accuracy"].astype(float)
    n_a, n_b = int((level == a).sum()), int((level == b).sum())
    out: dict[str, Any] = {"factor": factor, "a": a, "b": b, "state": "open", "diff_pp": None, "ci_pp": None,
                           "more_seeds": 0, "n_a": n_a, "n_b": n_b, "method": "", "note": ""}
    diffs = _paired_diffs(rows, level, a, b)
    if diffs is not None:
        est, lo, hi = (float(v[-1]) for v in paired_looks(diffs, alpha, mixture_g(alpha)))
        sd, n, paired = float(np.std(diffs, ddof=1)), len(diffs), True
        out["method"] = f"paired over {n} seed blocks"
    elif min(n_a, n_b) >= 1 and n_a + n_b >= 3:
        est, lo, hi = _two_sample(y, _order(rows), level, a, b, alpha)
        xa, xb = y[level == a].to_numpy(float), y[level == b].to_numpy(float)
        ss = float(np.sum((xa - xa.mean()) ** 2) + np.sum((xb - xb.mean()) ** 2))
        sd, n, paired = float(np.sqrt(ss / (n_a + n_b - 2))), min(n_a, n_b), False
        out["method"] = "two-sample (pooled variance)"
    else:
        out["more_seeds"] = max(0, min(max_repeats, MIN_SEEDS) - min(n_a, n_b))
        out["note"] = "fewer than 2 distinct runs"
        return out
    if lo > hi:  # the looks' intervals no longer meet (probability ≤ α, or noise that is not normal): today's
        lo = hi = est  # estimate, and the comparison stays open unless it is exact
    if not np.isfinite(lo) or not np.isfinite(hi):
        out["note"] = "interval unbounded at this many seeds"
    lo, hi = max(lo, -1.0), min(hi, 1.0)  # a difference of accuracies lies in [-1, 1]: coverage is kept
    out.update(diff_pp=num(100 * est), ci_pp=[num(100 * lo), num(100 * hi)], state=settle(lo, hi, resolution))
    out["more_seeds"] = _more_seeds(est, sd, n, paired, out["state"], resolution, alpha, max_repeats)
    return out


def _exact(rows: pd.DataFrame, factor: str, levels: list[str]) -> bool:
    """Every level's runs bit-identical copies of one training (no seed noise at all): the differences are exact."""
    fin = finished_runs(rows) if len(rows) else rows
    if "weights_hash" not in fin.columns or fin.empty:
        return False
    level = labels(fin, factor)
    return all((level == lv).sum() >= 2 and fin.loc[level == lv, "weights_hash"].astype(str).nunique() == 1
               and fin.loc[level == lv, "weights_hash"].astype(str).iloc[0] != "" for lv in levels)


def comparisons_of(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(factor, a, b) for the compared pairs of levels of every varied treatment (structure.compared_pairs: each
    against the base in a one-at-a-time design), levels in order of first appearance."""
    fin = distinct_runs(df)
    out = []
    for factor, role in factor_roles(df).items():
        if role != "treatment" or factor not in fin.columns:
            continue
        levels = list(dict.fromkeys(labels(fin, factor)))
        out += [(factor, a, b) for a, b in compared_pairs(df, factor, levels)]
    return out


def decide(table: pd.DataFrame, resolution_pp: float, alpha: float = 0.05, max_repeats: int = 30) -> dict[str, Any]:
    """Which comparisons are settled (effect / no effect larger than resolution_pp) and what the open ones need.

    Returns {"state": settled | open | max_reached, "comparisons": [{factor, a, b, state, diff_pp, ci_pp,
    more_seeds, n_a, n_b, method, note}], "levels": [{factor, level, seeds}], "alpha", "family_size",
    "level_each", "resolution_pp", "max_repeats", "method"}; diff_pp is mean(a) − mean(b), in pp.
    """
    if not resolution_pp > 0 or not 0 < alpha < 1 or max_repeats < MIN_SEEDS:
        raise HarnessError(f"sequential: got resolution_pp={resolution_pp}, alpha={alpha}, max_repeats={max_repeats}; "
                           f"allowed: resolution_pp > 0, 0 < alpha < 1, max_repeats >= {MIN_SEEDS}")
    resolution = resolution_pp / 100
    pairs = comparisons_of(table)
    each = alpha / max(1, len(pairs))
    comps, seeds = [], []
    for factor in dict.fromkeys(f for f, _, _ in pairs):
        rows = rows_for(table, factor)
        levels = list(dict.fromkeys(lv for f, a, b in pairs if f == factor for lv in (a, b)))
        raw = rows_for(table, factor, finished_runs(table))
        seeds += [{"factor": factor, "level": lv, "seeds": int((labels(raw, factor) == lv).sum())} for lv in levels]
        exact = _exact(raw, factor, levels)
        for f, a, b in pairs:
            if f != factor:
                continue
            if exact:
                diff = float(rows.loc[labels(rows, factor) == a, "accuracy"].mean()
                             - rows.loc[labels(rows, factor) == b, "accuracy"].mean())
                comps.append({"factor": f, "a": a, "b": b, "state": settle(diff, diff, resolution),
                              "diff_pp": num(100 * diff), "ci_pp": [num(100 * diff)] * 2, "more_seeds": 0,
                              "n_a": 1, "n_b": 1, "method": "exact (bit-identical trainings)", "note": ""})
            else:
                comps.append(_comparison(rows, f, a, b, each, resolution, max_repeats))
    open_ = [c for c in comps if c["state"] == "open"]
    state = "settled" if not open_ else "max_reached" if all(c["more_seeds"] == 0 for c in open_) else "open"
    return {"state": state, "comparisons": comps, "levels": seeds, "alpha": alpha, "family_size": len(pairs),
            "level_each": 1 - each, "resolution_pp": resolution_pp, "max_repeats": max_repeats,
            "method": f"t confidence sequence (Lai 1976; mixture g={mixture_g(each):g}), Bonferroni over {len(pairs)} "
                      "comparisons"}
