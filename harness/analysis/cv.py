"""Cross-validated accuracy when `evaluation.fold` is a factor: per seed, over seeds, and of the seed ensemble.

A CV estimate is the mean over folds of one replicate (one set of seeds); its spread over replicates is the seed
noise of the CV estimate itself, so the 95% CI is a t interval over replicates (clipped to [0, 1]). The
ensemble is the majority vote of all replicates' predictions within each fold, pooled over the folds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as ss

from harness.analysis.levels import num, quiet
from harness.analysis.runs_table import finished_runs

FOLD = "evaluation.fold"


def cross_validation(df: pd.DataFrame, preds: dict[str, pd.DataFrame], others: list[str]) -> dict[str, Any] | None:
    """One entry per setting of the other varied factors; None when the study has no fold factor."""
    fin = finished_runs(df)
    if FOLD not in fin.columns or fin[FOLD].nunique() < 2 or "replicate" not in fin.columns:
        return None
    others = [f for f in others if f != FOLD and not f.startswith("seeds.")]
    groups = fin.groupby(others, sort=False) if others else [((), fin)]
    rows = []
    for setting, group in groups:
        setting = setting if isinstance(setting, tuple) else (setting,)
        rows.append({"setting": dict(zip(others, map(str, setting), strict=True)), **_one(group, preds)})
    return {"folds": int(fin[FOLD].nunique()), "groups": rows}


def _one(group: pd.DataFrame, preds: dict[str, pd.DataFrame]) -> dict[str, Any]:
    folds = sorted(group[FOLD].astype(str).unique())
    complete = group.groupby("replicate").filter(lambda g: g[FOLD].astype(str).nunique() == len(folds))
    per_seed = complete.groupby("replicate")["accuracy"].mean().to_numpy(float)
    out: dict[str, Any] = {"n_seeds": int(len(per_seed)), "per_seed": [num(a) for a in per_seed],
                           "mean": num(per_seed.mean()) if len(per_seed) else None, "ci": None,
                           "ensemble": None}
    if len(per_seed) >= 2 and np.ptp(per_seed) > 0:
        with quiet():
            interval = ss.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
        out["ci"] = [num(max(interval.low, 0.0)), num(min(interval.high, 1.0))]
    out["ensemble"] = _majority_vote(complete, preds)
    return out


def _majority_vote(runs: pd.DataFrame, preds: dict[str, pd.DataFrame]) -> dict[str, Any] | None:
    """Accuracy of the per-fold majority vote of every seed, over all validation images of all folds."""
    if "run_key" not in runs.columns or not all(key in preds for key in runs["run_key"]):
        return None
    correct = total = 0
    for _, fold in runs.groupby(FOLD):
        frames = [preds[key].set_index("id").sort_index() for key in fold["run_key"]]
        if any(not f.index.equals(frames[0].index) for f in frames):
            return None  # the seeds of one fold were validated on different images: no vote
        votes = np.stack([f["pred"].to_numpy() for f in frames])
        majority = ss.mode(votes, axis=0, keepdims=False).mode  # ties: the smallest digit
        correct += int((majority == frames[0]["label"].to_numpy()).sum())
        total += len(majority)
    return {"members": int(runs["replicate"].nunique()), "accuracy": num(correct / total) if total else None,
            "images": total}
