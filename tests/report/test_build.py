"""Report: verdict first, documented JSON keys, plots, flips; degenerate tables still give a report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.flips import flip_analysis
from harness.report.build import build_report

KEYS = {"schema_version", "title", "verdict", "accuracy", "environments", "n_runs", "n_finished", "n_failed", "failed",
        "constants",
        "factors", "decomposition", "random_effects", "identical", "flips", "cross_validation", "seeds_needed", "plots",
        "design", "multiplicity"}


def _study(tmp: Path, rng: np.random.Generator) -> pd.DataFrame:
    """2 determinism levels × 2 pipelines × 4 seeds × 2 replicates, with prediction files and one failure."""
    label = rng.integers(0, 10, 200)
    rows = []
    for det in ("on", "off"):
        for pipe in ("stretch→binarize", "binarize→stretch"):
            for seed in range(4):
                base = rng.normal(0, 0.002)
                for r in range(2):
                    key = f"{det}-{pipe[:3]}-{seed}-{r}"
                    acc = 0.98 + base + (0 if det == "on" else rng.normal(0, 0.001)) + (0.004 if pipe[0] == "s" else 0)
                    pred = label.copy()
                    flip = rng.random(200) < 0.05
                    pred[flip] = rng.integers(0, 10, flip.sum())
                    pd.DataFrame({"id": np.arange(200), "label": label, "pred": pred}).to_csv(
                        tmp / f"{key}.csv", index=False)
                    rows.append({"run_key": key, "config_key": f"{det}-{pipe}-{seed}", "status": "FINISHED",
                                 "accuracy": acc,
                                 "weights_hash": f"{det}{pipe}{seed}" + ("" if det == "on" else str(r)),
                                 "wall_time_s": (30.0 if det == "on" else 12.0) * (1 + rng.normal(0, 0.03)),
                                 "replicate": r,
                                 "predictions": f"{key}.csv", "determinism.op_determinism": det,
                                 "preprocess.pipeline": pipe, "seeds.init": str(seed), "data.size": "28"})
    rows.append({"run_key": "boom", "status": "FAILED", "failure_reason": "OOM", "accuracy": np.nan,
                 "determinism.op_determinism": "on", "preprocess.pipeline": "x", "seeds.init": "0", "data.size": "28"})
    return pd.DataFrame(rows)


def test_full_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = _study(tmp_path, rng)
    images = {i: rng.integers(0, 255, (28, 28)).astype(np.uint8) for i in range(200)}
    out = tmp_path / "report"
    rep = build_report(df, out, table_dir=tmp_path, images=images, delta_pp=0.2, title="Demo")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Demo\n\n## Verdict\n")
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(data) == KEYS and data == json.loads(json.dumps(rep))
    assert data["n_runs"] == 33 and data["n_failed"] == 1 and data["failed"][0]["failure_reason"] == "OOM"
    assert data["constants"] == {"data.size": "28"}
    verdict = " ".join(data["verdict"])
    assert "preprocess.pipeline explains the most accuracy variance" in verdict
    assert "with determinism.op_determinism=on, 8/8" in verdict.lower()
    assert "with determinism.op_determinism=off, 0/8" in verdict
    assert "× the wall time" in verdict and "95% CI of the ratio" in verdict and "runs per level" in verdict
    for name in ("accuracy_hist.png", "churn.png", "flipped.png", "factor_preprocess.pipeline.png"):
        assert (out / name).stat().st_size > 1000
    assert data["flips"]["n_runs"] == 32 and len(data["flips"]["mcnemar"]) == 16
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("case", ["single_level", "identical", "few", "all_failed", "unbalanced", "no_factors",
                                  "noise_free"])
def test_degenerate_reports(tmp_path: Path, case: str) -> None:
    acc = [0.9, 0.91, 0.92, 0.93, 0.95, 0.96]
    f = ["a", "a", "a", "b", "b", "b"]
    status = ["FINISHED"] * 6
    if case == "single_level":
        f = ["a"] * 6
    elif case == "identical":
        acc = [0.9] * 6
    elif case == "few":
        acc, f, status = acc[:4], ["a", "a", "b", "b"], status[:4]
    elif case == "all_failed":
        status, acc = ["FAILED"] * 6, [np.nan] * 6
    elif case == "unbalanced":
        f = ["a"] * 5 + ["b"]
    elif case == "noise_free":  # deterministic runs: the factor is the only source of spread
        acc = [0.9, 0.9, 0.9, 0.95, 0.95, 0.95]
    # distinct hashes: equal accuracies of distinct trainings (copies are deduplicated, see test_design)
    df = pd.DataFrame({"accuracy": acc, "status": status, "config_key": "k",
                       "weights_hash": [f"h{i}" for i in range(len(acc))]})
    if case != "no_factors":
        df["toggle"] = f
    rep = build_report(df, tmp_path, delta_pp=1.0)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("## Verdict") and rep["verdict"]
    expected = {"single_level": "no factor with >= 2 levels", "identical": "all values identical",
                "few": "too few runs", "all_failed": "No finished runs", "unbalanced": "too few runs",
                "no_factors": "no factor with >= 2 levels", "noise_free": "95% CI 100.0%–100.0%"}[case]
    assert expected in md
    assert set(json.loads((tmp_path / "report.json").read_text())) == KEYS


def test_flip_analysis_known_values() -> None:
    ids = np.arange(4)
    label = np.array([0, 1, 2, 3])
    preds = {"a": [0, 1, 2, 3], "b": [0, 1, 2, 0], "c": [0, 1, 1, 0]}
    fl = flip_analysis({k: pd.DataFrame({"id": ids, "label": label, "pred": v}) for k, v in preds.items()},
                       [("a", "b"), ("b", "c")])
    assert fl["churn"]["matrix"][0] == pytest.approx([0.0, 0.25, 0.5])
    assert fl["n_ever_flipped"] == 2 and fl["top"][0]["id"] in {"2", "3"}
    assert fl["majority_vote_accuracy"] == pytest.approx(0.75)
    assert fl["mean_run_accuracy"] == pytest.approx((4 + 3 + 2) / 12)
    assert fl["mcnemar"][0]["only_a_correct"] == 1 and fl["mcnemar"][0]["exact"]
    assert fl["mcnemar"][0]["p"] == pytest.approx(1.0)
