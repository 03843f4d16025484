"""Prediction flips: which validation examples change their predicted label from run to run.

Accuracy can stay the same while individual predictions churn. Input: per-run predictions
(run_key -> DataFrame with columns id, label, pred, and p0.. where the run logged its softmax). Only ids present
in every run are compared.
McNemar pairs: consecutive replicates within each factor setting (runs that differ only by their
replicate's seeds, so a significant difference is seed noise, never a configuration change); config_key
cannot group them because it hashes the seeds. No pairs across settings. At most MAX_PAIRS pairs;
p-values Holm-corrected across them. The majority vote is taken within one setting (the one with most
runs), never across configurations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis.levels import holm, num, quiet
from harness.analysis.runs_table import factor_columns, finished_runs

MAX_PAIRS = 50
PRED_COLUMNS = ("id", "label", "pred")
PROBABILITY = re.compile(r"p\d+")  # p0, p1, ...: the softmax of each class, where the run logged it


def load_predictions(df: pd.DataFrame, table_dir: Path | None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Read the `predictions` CSVs of FINISHED runs; returns (run_key -> frame, problems as text)."""
    preds: dict[str, pd.DataFrame] = {}
    problems: list[str] = []
    if "predictions" not in df.columns:
        return preds, problems
    fin = finished_runs(df)
    for i, row in fin.iterrows():
        raw = "" if pd.isna(row["predictions"]) else str(row["predictions"]).strip()
        if not raw:
            continue
        path = Path(raw)
        if not path.is_absolute() and table_dir is not None:
            path = Path(table_dir) / path
        key = str(row["run_key"]) if "run_key" in fin.columns else str(i)
        try:
            p = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            problems.append(f"{path}: unreadable ({type(exc).__name__})")
            continue
        missing = [c for c in PRED_COLUMNS if c not in p.columns]
        if missing:
            problems.append(f"{path}: missing columns {missing}; allowed: id,label,pred")
            continue
        preds[key] = p[[*PRED_COLUMNS, *probability_columns(p)]].astype({"id": str})
    return preds, problems


def probability_columns(frame: pd.DataFrame) -> list[str]:
    """The softmax columns p0, p1, ... in class order (empty for runs that logged labels only)."""
    return sorted((c for c in frame.columns if PROBABILITY.fullmatch(str(c))), key=lambda c: int(c[1:]))


def settings(df: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """run_key -> its factor setting as text (all factor levels); one setting when nothing varies."""
    fin = finished_runs(df)
    if "run_key" not in fin.columns:
        return {}
    fin = fin[fin["run_key"].astype(str).isin(keys)]
    cols = factor_columns(df)
    text = fin[cols].astype(str).agg(" · ".join, axis=1) if cols else pd.Series("", index=fin.index)
    return dict(zip(fin["run_key"].astype(str), text, strict=True))


def default_pairs(df: pd.DataFrame, keys: list[str]) -> list[tuple[str, str]]:
    """Consecutive replicates within each factor setting; no pairs across settings."""
    fin = finished_runs(df)
    pairs: list[tuple[str, str]] = []
    if "run_key" not in fin.columns:
        return pairs
    fin = fin[fin["run_key"].astype(str).isin(keys)].copy()
    setting = settings(df, keys)
    fin["_setting"] = fin["run_key"].astype(str).map(setting)
    order = ["_setting", "replicate"] if "replicate" in fin.columns else ["_setting"]
    for _, g in fin.sort_values(order, kind="stable").groupby("_setting", sort=False):
        rk = g["run_key"].astype(str).tolist()
        pairs += list(zip(rk[:-1], rk[1:], strict=True))
    return pairs[:MAX_PAIRS]


def _mcnemar(ci: np.ndarray, cj: np.ndarray) -> dict[str, Any]:
    """McNemar on paired correctness; exact binomial when discordant pairs < 25."""
    from statsmodels.stats.contingency_tables import mcnemar

    table = np.array([[np.sum(ci & cj), np.sum(ci & ~cj)], [np.sum(~ci & cj), np.sum(~ci & ~cj)]])
    b, c = int(table[0, 1]), int(table[1, 0])
    if b + c == 0:
        return {"only_a_correct": 0, "only_b_correct": 0, "statistic": None, "p": 1.0, "exact": True}
    exact = b + c < 25
    with quiet():
        r = mcnemar(table, exact=exact, correction=True)
    return {"only_a_correct": b, "only_b_correct": c, "statistic": num(r.statistic), "p": num(r.pvalue),
            "exact": exact}


def _same_validation_set(preds: dict[str, pd.DataFrame]) -> tuple[list[str], list[pd.DataFrame]]:
    """The largest group of runs validated on the same ids: flips only compare predictions on one split."""
    frames = {key: p.drop_duplicates("id").set_index("id") for key, p in preds.items()}
    by_ids: dict[frozenset, list[str]] = {}
    for key, frame in frames.items():
        by_ids.setdefault(frozenset(frame.index), []).append(key)
    keys = max(by_ids.values(), key=len)
    if len(keys) < 2:  # every run has its own split: fall back to the ids all runs share
        keys = list(frames)
    return keys, [frames[key] for key in keys]


def flip_analysis(preds: dict[str, pd.DataFrame], pairs: list[tuple[str, str]] | None = None,
                  *, top: int = 20, setting: dict[str, str] | None = None) -> dict[str, Any]:
    """Churn matrix, per-example flip rates, top flipping ids, McNemar pairs, majority-vote accuracy."""
    out: dict[str, Any] = {"n_runs": len(preds), "n_ids": 0, "n_ids_dropped": 0, "reason": None,
                           "churn": {"runs": [], "matrix": []}, "mean_churn": None, "max_churn": None,
                           "n_ever_flipped": None, "frac_ever_flipped": None, "mean_flip_rate": None,
                           "top": [], "mcnemar": [], "n_mcnemar_significant": 0,
                           "majority_vote_accuracy": None, "mean_run_accuracy": None}
    if len(preds) < 2:
        out["reason"] = "needs predictions from >= 2 finished runs"
        return out
    keys, frames = _same_validation_set(preds)
    out["n_runs"], out["n_runs_other_validation_sets"] = len(keys), len(preds) - len(keys)
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    all_ids = frames[0].index
    for f in frames[1:]:
        all_ids = all_ids.union(f.index)
    out["n_ids"], out["n_ids_dropped"] = int(len(common)), int(len(all_ids) - len(common))
    if len(common) == 0:
        out["reason"] = "no example id is shared by all runs"
        return out
    common = common.sort_values()
    pred = np.column_stack([f.loc[common, "pred"].astype(str).to_numpy() for f in frames])
    label = frames[0].loc[common, "label"].astype(str).to_numpy()
    correct = pred == label[:, None]
    churn = np.vstack([(pred != pred[:, [i]]).mean(axis=0) for i in range(len(keys))])
    upper = churn[np.triu_indices(len(keys), k=1)]
    out["churn"] = {"runs": keys, "matrix": [[num(v) for v in row] for row in churn]}
    out.update(mean_churn=num(upper.mean()), max_churn=num(upper.max()))
    cats, codes = np.unique(pred, return_inverse=True)
    # scipy's mode breaks ties by the smallest label code: documented, deterministic.
    majority = cats[ss.mode(codes.reshape(pred.shape), axis=1, keepdims=False).mode]
    flip_rate = (pred != majority[:, None]).mean(axis=1)
    out.update(n_ever_flipped=int((flip_rate > 0).sum()), frac_ever_flipped=num((flip_rate > 0).mean()),
               mean_flip_rate=num(flip_rate.mean()))
    # the vote: only runs of one configuration (the setting with most runs), never a mix of configurations
    by_setting: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_setting.setdefault((setting or {}).get(key, ""), []).append(i)
    name, members = max(by_setting.items(), key=lambda kv: len(kv[1]))
    sub = codes.reshape(pred.shape)[:, members]
    vote = cats[ss.mode(sub, axis=1, keepdims=False).mode]
    out.update(majority_vote_accuracy=num((vote == label).mean()), mean_run_accuracy=num(correct[:, members].mean()),
               majority_vote_runs=len(members), majority_vote_setting=name)
    order = np.argsort(-flip_rate, kind="stable")[:top]
    out["top"] = [{"id": str(common[i]), "label": str(label[i]), "majority_pred": str(majority[i]),
                   "flip_rate": num(flip_rate[i]), "n_distinct_preds": int(len(set(pred[i])))}
                  for i in order if flip_rate[i] > 0]
    col = {k: i for i, k in enumerate(keys)}
    pairs = [p for p in (pairs if pairs is not None else list(zip(keys[:-1], keys[1:], strict=True)))
             if p[0] in col and p[1] in col][:MAX_PAIRS]
    rows = [{"a": a, "b": b, **_mcnemar(correct[:, col[a]], correct[:, col[b]])} for a, b in pairs]
    for row, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = p
    out["mcnemar"] = rows
    out["n_mcnemar_significant"] = sum(1 for r in rows if r["p_holm"] is not None and r["p_holm"] < 0.05)
    return out

