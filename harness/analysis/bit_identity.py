"""Reproducibility: did identically configured runs give bit-identical models, and at what time cost?

Runs sharing a `config_key` were configured identically. A group is bit-identical when every run
has the same non-empty `weights_hash`. Results are broken down by each `determinism.*` factor so
the verdict can say "with X=on, 10/10 groups were bit-identical; with off, 0/10".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.analysis.levels import num
from harness.analysis.runs_table import factor_columns, finished_runs

DETERMINISM_PREFIX = "determinism."


def determinism_factors(df: pd.DataFrame) -> list[str]:
    """Factor columns whose name starts with `determinism.`."""
    return [c for c in factor_columns(df) if str(c).startswith(DETERMINISM_PREFIX)]


def identical_groups(df: pd.DataFrame) -> dict[str, Any]:
    """Per config_key group (>= 2 FINISHED runs): hash count, bit-identity, accuracy spread; by determinism level."""
    fin = finished_runs(df)
    det = determinism_factors(df)
    out: dict[str, Any] = {"n_groups": 0, "n_identical": 0, "groups": [], "by_determinism": {},
                           "reason": None}
    if "config_key" not in fin.columns:
        out["reason"] = "no config_key column"
        return out
    fin = fin[fin["config_key"].astype(str) != ""]
    has_hash = "weights_hash" in fin.columns
    for key, g in fin.groupby(fin["config_key"].astype(str), sort=False):
        if len(g) < 2:
            continue
        acc = g["accuracy"].to_numpy(float)
        hashes = g["weights_hash"].astype(str).tolist() if has_hash else []
        n_hashes = len(set(hashes)) if has_hash else None
        identical = bool(has_hash and "" not in hashes and n_hashes == 1)
        out["groups"].append({
            "config_key": key, "n": int(len(g)), "n_hashes": n_hashes, "bit_identical": identical,
            "accuracy_identical": bool(np.ptp(acc) == 0), "accuracy_min": num(acc.min()),
            "accuracy_max": num(acc.max()), "accuracy_range": num(np.ptp(acc)),
            "accuracy_std": num(np.std(acc, ddof=1)),
            "determinism": {f: str(g[f].iloc[0]) for f in det},
        })
    out["n_groups"] = len(out["groups"])
    out["n_identical"] = sum(g["bit_identical"] for g in out["groups"])
    if not out["groups"]:
        out["reason"] = "no config_key has >= 2 finished runs"
    elif not has_hash:
        out["reason"] = "no weights_hash column: bit-identity unknown"
    for f in det:
        levels: dict[str, dict[str, Any]] = {}
        for g in out["groups"]:
            lv = levels.setdefault(g["determinism"][f], {"groups": 0, "identical": 0, "ranges": []})
            lv["groups"] += 1
            lv["identical"] += int(g["bit_identical"])
            lv["ranges"].append(g["accuracy_range"])
        for lv in levels.values():
            ranges = [r for r in lv.pop("ranges") if r is not None]
            lv["mean_accuracy_range"] = num(np.mean(ranges)) if ranges else None
        out["by_determinism"][f] = levels
    return out


def determinism_cost(df: pd.DataFrame) -> dict[str, Any]:
    """Mean wall_time_s per level of each determinism factor and the ratio to the fastest level."""
    fin = finished_runs(df)
    out: dict[str, Any] = {}
    if "wall_time_s" not in fin.columns:
        return out
    for f in determinism_factors(df):
        t = pd.to_numeric(fin["wall_time_s"], errors="coerce")
        means = t.groupby(fin[f].astype(str), sort=False).mean().dropna()
        if len(means) < 2 or means.min() <= 0:
            continue
        fastest = str(means.idxmin())
        out[f] = {"mean_wall_time_s": {str(k): num(v) for k, v in means.items()},
                  "fastest": fastest,
                  "ratio_to_fastest": {str(k): num(v / means.min()) for k, v in means.items()},
                  "ratio_ci": {str(k): _ratio_ci(t[fin[f].astype(str) == str(k)], t[fin[f].astype(str) == fastest])
                               for k in means.index if str(k) != fastest}}
    return out


def _ratio_ci(slow: pd.Series, fast: pd.Series, level: float = 0.95) -> list[float] | None:
    """95% CI of the ratio of typical wall times: Welch's t on log times, back-transformed (a ratio of
    geometric means). None with fewer than 2 positive times on either side."""
    a, b = np.log(slow[slow > 0].dropna()), np.log(fast[fast > 0].dropna())
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return None
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence_level=level)
    return [num(np.exp(ci.low)), num(np.exp(ci.high))]
