"""The study report: report.md (verdict first), report.json (stable keys) and PNG plots.

report.json top-level keys (schema_version 1; documented in docs/runs-table.md):
  schema_version, title, verdict (list of sentences), n_runs, n_finished, n_failed, failed,
  constants, factors, decomposition, random_effects, identical, flips, cross_validation, seeds_needed, plots.
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
from harness.analysis.decomposition import random_effects, seeds_needed, variance_decomposition
from harness.analysis.flips import default_pairs, flip_analysis, load_predictions
from harness.analysis.levels import level_summary, mean_tests, variance_tests
from harness.analysis.runs_table import factor_columns, finished_runs, validate_runs_table
from harness.files import write_atomic
from harness.report import plots
from harness.report.markdown import render_markdown
from harness.report.verdict import verdict

SCHEMA_VERSION = 1


def analyze(df: pd.DataFrame, *, table_dir: Path | None = None, delta_pp: float = 1.0,
            title: str = "") -> dict[str, Any]:
    """All statistics of a runs table as one JSON-ready dict (no files written)."""
    df = validate_runs_table(df)
    fin = finished_runs(df)
    bad = df.loc[~df.index.isin(fin.index)]
    cols = [c for c in ("run_key", "status", "failure_reason") if c in bad.columns]
    rep: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "title": title, "verdict": [], "n_runs": int(len(df)),
        "n_finished": int(len(fin)), "n_failed": int(len(bad)),
        "failed": bad[cols].astype(str).to_dict("records"), "constants": {}, "factors": {},
    }
    varied = []
    for f in factor_columns(df):
        levels = fin[f].astype(str).unique().tolist()
        if len(levels) < 2:
            rep["constants"][f] = levels[0] if levels else None
            continue
        varied.append(f)
        rep["factors"][f] = {"levels": level_summary(df, f), "variance_tests": variance_tests(df, f),
                             "mean_tests": mean_tests(df, f)}
    rep["decomposition"] = variance_decomposition(df, varied)
    others = [f for f in varied if not f.startswith("seeds.")]
    rep["random_effects"] = {f: random_effects(df, f, others=others) for f in varied
                             if f.startswith("seeds.") and fin[f].nunique() >= 3}
    rep["identical"] = identical_groups(df)
    rep["identical"]["cost"] = determinism_cost(df)
    preds, problems = load_predictions(df, table_dir)
    keys = list(preds)
    rep["flips"] = flip_analysis(preds, default_pairs(df, keys)) if len(preds) >= 2 else {
        "reason": "needs predictions from >= 2 finished runs", "n_runs": len(preds)}
    rep["flips"]["problems"] = problems
    rep["cross_validation"] = cross_validation(df, preds, varied)
    rep["seeds_needed"] = seeds_needed(df, delta_pp=delta_pp) if varied else _seeds_single(df, delta_pp)
    rep["verdict"] = verdict(rep)
    return rep


def _seeds_single(df: pd.DataFrame, delta_pp: float) -> dict[str, Any]:
    """Power from the overall std when nothing is varied (every finished run is a replicate)."""
    acc = finished_runs(df)["accuracy"].to_numpy(float)
    sigma = float(np.std(acc, ddof=1)) if len(acc) >= 2 else None
    return seeds_needed(df, sigma=sigma, n_per_group=int(len(acc)), delta_pp=delta_pp)


def build_report(df: pd.DataFrame, out_dir: Path, *, table_dir: Path | None = None,
                 images: dict[int, np.ndarray] | None = None, delta_pp: float = 1.0,
                 title: str = "") -> dict[str, Any]:
    """Analyze the runs table and write report.md, report.json and plots into out_dir; return the dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = analyze(df, table_dir=table_dir, delta_pp=delta_pp, title=title)
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
    write_atomic(out_dir / "report.md", render_markdown(rep))
    return rep
