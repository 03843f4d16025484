"""Seed-robust selection: after a search, does its #1 beat the other top configurations beyond seed noise?

Each candidate was re-run with fresh seeds. Per candidate: the re-run mean with a 95% t interval, and the
winner's curse (search score minus re-run mean). The seed-robust best has the highest lower 95% bound.
A candidate with fewer than 2 finished re-runs has no interval (one run says nothing about seed noise)
and cannot be the seed-robust best; identical re-runs (no spread) get the degenerate t interval [mean, mean]
only when they are distinct trainings, since copies are counted once (runs_table.distinct_runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as ss

from harness.analysis.levels import groups_of, holm, num, pairwise_comparison, quiet


def robust_selection(search_accuracy: dict[str, float], table: pd.DataFrame, factor: str) -> dict[str, Any]:
    """Does the search's #1 beat the others beyond seed noise? Per candidate: re-run mean, 95% CI, winner's curse.

    `search_accuracy` is ordered best first; `table` is a runs table whose `factor` column names the candidate.
    """
    groups = groups_of(table, factor)
    rows = []
    for label, searched in search_accuracy.items():
        x = groups.get(label, np.array([]))
        ci = None
        if len(x) >= 2 and np.ptp(x) > 0:
            with quiet():
                interval = ss.ttest_1samp(x, 0.0).confidence_interval(0.95)
            ci = [num(interval.low), num(interval.high)]
        elif len(x) >= 2:  # distinct trainings that scored the same: the t interval degenerates to the mean
            ci = [num(x.mean()), num(x.mean())]
        mean = num(x.mean()) if len(x) else None
        rows.append({"candidate": label, "n": int(len(x)), "search_accuracy": num(searched), "mean": mean,
                     "std": num(x.std(ddof=1)) if len(x) >= 2 else None, "ci": ci,
                     "winners_curse": None if mean is None else num(searched - mean)})
    first = rows[0]["candidate"]
    pairs = [pairwise_comparison(first, groups[first], r["candidate"], groups[r["candidate"]])
             for r in rows[1:] if first in groups and r["candidate"] in groups]
    for key in ("welch_p", "mw_p"):
        for pair, p in zip(pairs, holm([pair[key] for pair in pairs]), strict=True):
            pair[key + "_holm"] = p
    ranked = [r for r in rows if r["ci"] is not None and r["n"] >= 2]
    robust = max(ranked, key=lambda r: (r["ci"][0], r["mean"]))["candidate"] if ranked else None
    wins = [p for p in pairs if p["mean_diff"] is not None and p["mean_diff"] > 0
            and p["welch_p_holm"] is not None and p["welch_p_holm"] < 0.05]
    return {"candidates": rows, "top1_vs_others": pairs, "robust_best": robust,
            "top1_beats_all": bool(pairs) and len(wins) == len(pairs), "verdict": _verdict(rows, pairs, robust)}


def _verdict(rows: list[dict], pairs: list[dict], robust: str | None) -> list[str]:
    first = rows[0]
    lines = []
    if first["mean"] is not None:
        lines.append(f"The search's #1 ({first['candidate']}) scored {100 * first['search_accuracy']:.2f}% in the "
                     f"search and {100 * first['mean']:.2f}% over {first['n']} fresh seeds: winner's curse "
                     f"{100 * first['winners_curse']:+.2f} pp.")
    for pair in pairs:
        p = pair["welch_p_holm"]
        wins = p is not None and p < 0.05 and pair["mean_diff"] > 0
        verdict = "beyond seed noise" if wins else "not beyond seed noise"
        lines.append(f"#1 vs {pair['b']}: {100 * (pair['mean_diff'] or 0):+.2f} pp (Welch, Holm p="
                     f"{'n/a' if p is None else f'{p:.3g}'}) — {verdict}.")
    if robust is not None:
        best = next(r for r in rows if r["candidate"] == robust)
        lines.append(f"Seed-robust best (highest lower 95% bound): {robust}, {100 * best['mean']:.2f}% "
                     f"(95% CI {100 * best['ci'][0]:.2f}–{100 * best['ci'][1]:.2f}%).")
    return lines
