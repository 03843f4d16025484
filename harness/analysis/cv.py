"""Cross-validated accuracy when `evaluation.fold` is a factor: per seed, over seeds, and of the seed ensemble.

A CV estimate is the mean over folds of one replicate (one set of seeds); its spread over replicates is the seed
noise of the CV estimate itself, so the 95% CI is a t interval over replicates (clipped to [0, 1]). The
ensemble is what `predict --ensemble` serves: the argmax of all replicates' mean softmax within each fold, pooled
over the folds; runs that logged no softmax (older runs tables) fall back to the majority vote of their labels.

With several settings of the other factors, every pair of settings is compared on the per-seed CV means:
paired t (scipy ttest_rel) when the same replicates drew the same seeds in both (equal `seed_block` sets per
replicate), else Welch t (ttest_ind, equal_var=False); the CI of the difference, Holm across pairs. This is
the "two CV configurations" comparison findings used to do by hand.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as ss

from harness.analysis.common import num, quiet
from harness.analysis.flips import probability_columns
from harness.analysis.multiplicity import holm
from harness.analysis.runs_table import factor_roles, finished_runs
from harness.study.roles import FOLD


def cross_validation(df: pd.DataFrame, preds: dict[str, pd.DataFrame], others: list[str]) -> dict[str, Any] | None:
    """One entry per setting of the other varied factors; None when the study has no fold factor."""
    fin = finished_runs(df)
    roles = factor_roles(fin)
    fold = next((f for f, r in roles.items() if r == "fold"), FOLD)  # a `role.<factor>` column may name another
    if fold not in fin.columns or fin[fold].nunique() < 2 or "replicate" not in fin.columns:
        return None
    others = [f for f in others if f != fold and roles.get(f) == "treatment"]
    groups = fin.groupby(others, sort=False) if others else [((), fin)]
    rows = []
    for setting, group in groups:
        setting = setting if isinstance(setting, tuple) else (setting,)
        rows.append({"setting": dict(zip(others, map(str, setting), strict=True)), **_one(group, preds, fold)})
    return {"folds": int(fin[fold].nunique()), "groups": rows, "comparisons": _compare(rows)}


def _name(setting: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "all"


def _compare(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of settings: difference of CV means over seeds, paired when the seeds match."""
    out = []
    for a, b in combinations(groups, 2):
        xa, xb = np.array(a["per_seed"], float), np.array(b["per_seed"], float)
        row: dict[str, Any] = {"a": _name(a["setting"]), "b": _name(b["setting"]), "diff": None, "ci": None,
                               "p": None, "method": None}
        if len(xa) < 2 or len(xb) < 2:
            out.append(row)
            continue
        paired = a["replicates"] == b["replicates"] and a["blocks"] == b["blocks"] and all(a["blocks"])
        with quiet():
            res = ss.ttest_rel(xa, xb) if paired else ss.ttest_ind(xa, xb, equal_var=False)
            ci = res.confidence_interval(0.95)
        row.update(diff=num(xa.mean() - xb.mean()), p=num(res.pvalue), ci=[num(ci.low), num(ci.high)],
                   method=f"paired t over {len(xa)} seeds" if paired else "Welch t")
        out.append(row)
    for row, p in zip(out, holm([r["p"] for r in out]), strict=True):
        row["p_holm"] = p
    return out


def _one(group: pd.DataFrame, preds: dict[str, pd.DataFrame], fold: str) -> dict[str, Any]:
    folds = sorted(group[fold].astype(str).unique())
    complete = group.groupby("replicate").filter(lambda g: g[fold].astype(str).nunique() == len(folds))
    by_rep = complete.groupby("replicate")
    per_seed = by_rep["accuracy"].mean().to_numpy(float)
    blocks = ([",".join(sorted(set(g["seed_block"].astype(str)))) for _, g in by_rep]
              if "seed_block" in complete.columns else [""] * len(per_seed))
    out: dict[str, Any] = {"n_seeds": int(len(per_seed)), "per_seed": [num(a) for a in per_seed],
                           "replicates": [int(r) for r in by_rep.groups], "blocks": blocks,
                           "mean": num(per_seed.mean()) if len(per_seed) else None, "ci": None,
                           "ensemble": None}
    if len(per_seed) >= 2 and np.ptp(per_seed) > 0:
        with quiet():
            interval = ss.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
        out["ci"] = [num(max(interval.low, 0.0)), num(min(interval.high, 1.0))]
    out["ensemble"] = _ensemble(complete, preds, fold)
    return out


def _ensemble(runs: pd.DataFrame, preds: dict[str, pd.DataFrame], fold: str) -> dict[str, Any] | None:
    """Accuracy of the per-fold ensemble of every seed, over all validation images of all folds."""
    if "run_key" not in runs.columns or not all(key in preds for key in runs["run_key"]):
        return None
    columns = probability_columns(preds[runs["run_key"].iloc[0]]) if len(runs) else []
    soft = bool(columns) and all(probability_columns(preds[key]) == columns for key in runs["run_key"])
    correct = total = 0
    for _, runs_of_fold in runs.groupby(fold):
        frames = [preds[key].set_index("id").sort_index() for key in runs_of_fold["run_key"]]
        if any(not f.index.equals(frames[0].index) for f in frames):
            return None  # the seeds of one fold were validated on different images: no vote
        if soft:  # what predict --ensemble serves
            answer = np.mean([f[columns].to_numpy(float) for f in frames], axis=0).argmax(axis=1)
        else:
            votes = np.stack([f["pred"].to_numpy() for f in frames])
            answer = ss.mode(votes, axis=0, keepdims=False).mode  # ties: the smallest digit
        correct += int((answer == frames[0]["label"].to_numpy()).sum())
        total += len(answer)
    return {"members": int(runs["replicate"].nunique()), "accuracy": num(correct / total) if total else None,
            "images": total, "rule": "mean softmax" if soft else "majority vote"}

