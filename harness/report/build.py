"""The study report: report.md (verdict first), report.json (stable keys) and PNG plots.

report.json top-level keys (schema_version 1; documented in docs/runs-table.md):
  schema_version, title, verdict (list of sentences), n_runs, n_finished, n_failed, failed,
  constants, factors, decomposition, random_effects, identical, flips, cross_validation, seeds_needed, plots,
  design (kind, roles, copies_dropped, paired, model), multiplicity (Holm over the verdict's claims at alpha),
  sequential (only with resolution_pp: analysis.sequential.decide).
Degenerate inputs (no finished run, one level, identical values) still give a full report whose
sections say why a statistic is missing. All files are written atomically (temp + os.replace).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.bit_identity import determinism_cost, identical_groups
from harness.analysis.cv import cross_validation
from harness.analysis.decomposition import random_effects, variance_decomposition
from harness.analysis.factorial import factorial_tests
from harness.analysis.failures import failure_table
from harness.analysis.flips import default_pairs, flip_analysis, load_predictions, settings
from harness.analysis.levels import level_summary, mean_tests, num, variance_tests
from harness.analysis.multiplicity import control_family
from harness.analysis.power import seeds_needed
from harness.analysis.runs_table import (
    design_kind,
    distinct_runs,
    factor_columns,
    factor_roles,
    finished_runs,
    seed_value_factor,
    validate_runs_table,
)
from harness.analysis.seed_sources import seed_source_spread
from harness.analysis.sequential import decide
from harness.files import write_atomic
from harness.report import plots
from harness.report.markdown import render_markdown
from harness.report.sequential import markdown_section, sequential_sentences
from harness.report.verdict import verdict, verdict_claims

SCHEMA_VERSION = 1


def analyze(df: pd.DataFrame, *, table_dir: Path | None = None, delta_pp: float = 1.0,
            title: str = "", alpha: float = 0.05, resolution_pp: float | None = None,
            max_repeats: int = 30) -> dict[str, Any]:
    """All statistics of a runs table as one JSON-ready dict (no files written).

    resolution_pp: also decide each comparison sequentially (report.json["sequential"], analysis.sequential).
    """
    df = validate_runs_table(df)
    fin = finished_runs(df)
    roles = factor_roles(df)
    bad = df.loc[~df.index.isin(fin.index)]
    cols = [c for c in ("run_key", "status", "failure_reason") if c in bad.columns]
    rep: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "title": title, "verdict": [], "n_runs": int(len(df)),
        "n_finished": int(len(fin)), "n_failed": int(len(bad)),
        "failed": bad[cols].astype(str).to_dict("records"), "constants": {}, "factors": {},
        "accuracy": _accuracy_summary(fin),
        "environments": _environments(fin),
        "design": {"kind": design_kind(df), "kind_inferred": not _design_given(df),
                   "roles": {}, "copies_dropped": distinct_runs(df).attrs["copies_dropped"],
                   "paired": {}},
    }
    varied = []
    for f in factor_columns(df):
        levels = fin[f].astype(str).unique().tolist()
        if len(levels) < 2:
            rep["constants"][f] = levels[0] if levels else None
            continue
        varied.append(f)
        rep["design"]["roles"][f] = roles[f]
        entry = {"role": roles[f], "levels": level_summary(df, f), "variance_tests": variance_tests(df, f),
                 "mean_tests": mean_tests(df, f), "failures": failure_table(df, f)}
        if roles[f] == "seed_source" and not seed_value_factor(fin, f, roles):
            entry["seed_spread"] = seed_source_spread(df, f)
        rep["design"]["paired"][f] = entry["mean_tests"]["paired"] is not None
        rep["factors"][f] = entry
    # seed sources are variances, not mean effects: they stay in the residual ("seed noise")
    fixed = [f for f in varied if roles[f] != "seed_source"]
    _model(df, rep, fixed)
    rep["decomposition"] = variance_decomposition(df, fixed)
    seed_values = [f for f in varied if roles[f] == "seed_source" and seed_value_factor(fin, f, roles)]
    rep["random_effects"] = {f: random_effects(df, f, others=fixed, crossed=seed_values) for f in seed_values
                             if fin[f].nunique() >= 3}
    rep["identical"] = identical_groups(df)
    rep["identical"]["cost"] = determinism_cost(df)
    preds, problems = load_predictions(df, table_dir)
    keys = list(preds)
    rep["flips"] = flip_analysis(preds, default_pairs(df, keys), setting=settings(df, keys)) if len(preds) >= 2 else {
        "reason": "needs predictions from >= 2 finished runs", "n_runs": len(preds)}
    rep["flips"]["problems"] = problems
    rep["cross_validation"] = cross_validation(df, preds, varied)
    rep["multiplicity"] = control_family(verdict_claims(rep), alpha)
    rep["seeds_needed"] = _power(df, rep, fixed, delta_pp, alpha)
    rep["verdict"] = verdict(rep)
    if resolution_pp is not None:
        rep["sequential"] = decide(df, resolution_pp, alpha=alpha, max_repeats=max_repeats)
        rep["verdict"] += sequential_sentences(rep["sequential"])
    return rep


def _design_given(df: pd.DataFrame) -> bool:
    return "design" in df.columns and bool(df["design"].astype(str).str.strip().ne("").any())


def _model(df: pd.DataFrame, rep: dict[str, Any], fixed: list[str]) -> None:
    """Several varied factors in a factorial: each treatment is tested within one model (analysis.factorial)."""
    treatments = [f for f in fixed if rep["design"]["roles"][f] == "treatment"]
    if rep["design"]["kind"] != "factorial" or len(fixed) < 2 or not treatments:
        return
    model = factorial_tests(df, fixed, treatments)
    rep["design"]["model"] = {k: model[k] for k in ("factors", "formula", "testable", "reason", "df_resid", "cells",
                                                     "balanced")}
    if model["testable"] or model["reason"].startswith("not testable: the replicates"):
        for f in treatments:
            rep["factors"][f]["model_tests"] = model["tests"].get(f) or {"reason": model["reason"]}


def _accuracy_summary(fin: pd.DataFrame) -> dict[str, Any]:
    """How much accuracy varies over the finished runs: the number the verdict leads with."""
    acc = fin["accuracy"].astype(float)
    return {"n": int(len(acc)), "mean": num(acc.mean()) if len(acc) else None,
            "std": num(acc.std(ddof=1)) if len(acc) >= 2 else None,
            "min": num(acc.min()) if len(acc) else None, "max": num(acc.max()) if len(acc) else None}


def _environments(fin: pd.DataFrame) -> dict[str, int]:
    """Finished runs per recorded environment (the `environment` column): more than one leads the verdict."""
    if "environment" not in fin.columns:
        return {}
    labels = fin["environment"].fillna("").astype(str)
    return {str(k): int(v) for k, v in labels[labels != ""].value_counts().items()}


def _power(df: pd.DataFrame, rep: dict[str, Any], fixed: list[str], delta_pp: float, alpha: float) -> dict[str, Any]:
    """Power for a toggle comparison, from the noise that comparison faces (paired when the design is), at the
    verdict's multiplicity (analysis.power)."""
    toggles = [f for f in fixed if rep["design"]["roles"][f] == "treatment"]
    # without a treatment here, the comparison to plan brings its own mean and spread tests into the family
    tests = (rep["multiplicity"]["size"] + (0 if toggles else 2)) or 1
    for f in toggles:
        paired = rep["factors"][f]["mean_tests"]["paired"]
        if paired and paired["sd_diff"]:
            out = seeds_needed(df, f, paired_sd=paired["sd_diff"], sigma_df=paired["blocks"] - 1,
                               n_per_group=paired["blocks"], delta_pp=delta_pp, alpha=alpha, tests=tests)
            out["note"] = (f"paired by seed block ({f}: {paired['blocks']} blocks); sigma = std of the paired "
                           f"differences. {out['note']}").strip()
            return out
    return seeds_needed(df, delta_pp=delta_pp, alpha=alpha, tests=tests)


def build_report(df: pd.DataFrame, out_dir: Path, *, table_dir: Path | None = None,
                 images: dict[int, np.ndarray] | None = None, delta_pp: float = 1.0,
                 title: str = "", alpha: float = 0.05, resolution_pp: float | None = None,
                 max_repeats: int = 30) -> dict[str, Any]:
    """Analyze the runs table and write report.md, report.json and plots into out_dir; return the dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = analyze(df, table_dir=table_dir, delta_pp=delta_pp, title=title, alpha=alpha, resolution_pp=resolution_pp,
                  max_repeats=max_repeats)
    fin = finished_runs(validate_runs_table(df))
    names: dict[str, str | None] = {"accuracy_hist": plots.accuracy_histogram(fin, out_dir)}
    for f, info in rep["factors"].items():
        names[f"factor:{f}"] = plots.factor_plot(fin, f, info["levels"], out_dir)
    if rep["flips"].get("mean_churn") is not None:
        names["churn"] = plots.churn_heatmap(rep["flips"], out_dir)
        if images:
            names["flipped"] = plots.flipped_grid(rep["flips"], images, out_dir)
    rep["plots"] = {k: v for k, v in names.items() if v}
    write_atomic(out_dir / "report.json", json.dumps(rep, indent=2, ensure_ascii=False, allow_nan=False))
    write_atomic(out_dir / "report.md", "\n".join([render_markdown(rep), *markdown_section(rep.get("sequential"))]))
    return rep
