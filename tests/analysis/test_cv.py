"""Cross-validation summary: per-seed CV means, their t interval (scipy reference) and the seed ensemble (mean
softmax where runs logged it, else the majority vote)."""

import numpy as np
import pandas as pd
import scipy.stats as ss

from harness.analysis.cv import cross_validation
from harness.report.build import analyze


def _cv_study(tmp_path):
    """3 folds x 3 seeds on 4 validation images per fold; seed 2 is wrong on image 0 of every fold."""
    rows, preds = [], {}
    accuracy = {0: [1.0, 0.75, 1.0], 1: [0.75, 1.0, 1.0], 2: [0.75, 0.75, 0.75]}  # [seed][fold]
    for fold in range(3):
        ids = np.arange(4) + 10 * fold
        label = np.array([1, 2, 3, 4])
        for seed in range(3):
            pred = label.copy()
            if accuracy[seed][fold] < 1:
                pred[0 if seed == 2 else 1 + seed] = 9
            key = f"f{fold}s{seed}"
            preds[key] = pd.DataFrame({"id": ids, "label": label, "pred": pred})
            preds[key].to_csv(tmp_path / f"{key}.csv", index=False)
            rows.append({"run_key": key, "status": "FINISHED", "accuracy": (pred == label).mean(),
                         "replicate": seed, "evaluation.fold": str(fold), "predictions": f"{key}.csv"})
    return pd.DataFrame(rows), preds


def test_cv_means_ci_and_majority_vote(tmp_path):
    df, preds = _cv_study(tmp_path)
    cv = cross_validation(df, preds, ["evaluation.fold"])
    group = cv["groups"][0]
    per_seed = np.array([11 / 12, 11 / 12, 0.75])
    assert cv["folds"] == 3 and group["n_seeds"] == 3
    assert np.allclose(group["per_seed"], per_seed) and np.isclose(group["mean"], per_seed.mean())
    reference = ss.t.interval(0.95, 2, loc=per_seed.mean(), scale=ss.sem(per_seed))
    assert np.allclose(group["ci"], [reference[0], min(reference[1], 1.0)]) and group["ci"][1] == 1.0
    # every image has at most one wrong vote out of three: the vote is always right
    assert group["ensemble"] == {"members": 3, "accuracy": 1.0, "images": 12, "rule": "majority vote"}


def test_cv_ensemble_averages_softmax_where_runs_logged_it():
    """Two of three seeds lean weakly to the wrong class, one is sure of the right one: the vote is wrong, the
    mean softmax (what predict --ensemble serves) is right."""
    rows, preds = [], {}
    for fold in range(2):
        for seed, (p_right, p_wrong) in enumerate([(0.45, 0.55), (0.45, 0.55), (0.98, 0.02)]):
            key = f"f{fold}s{seed}"
            preds[key] = pd.DataFrame({"id": [str(fold)], "label": [1], "pred": [1 if p_right > p_wrong else 0],
                                       "p0": [p_wrong], "p1": [p_right]})
            rows.append({"run_key": key, "status": "FINISHED", "accuracy": float(p_right > p_wrong),
                         "replicate": seed, "evaluation.fold": str(fold)})
    group = cross_validation(pd.DataFrame(rows), preds, ["evaluation.fold"])["groups"][0]
    assert group["ensemble"] == {"members": 3, "accuracy": 1.0, "images": 2, "rule": "mean softmax"}
    hard = {key: frame[["id", "label", "pred"]] for key, frame in preds.items()}
    assert cross_validation(pd.DataFrame(rows), hard, ["evaluation.fold"])["groups"][0]["ensemble"]["accuracy"] == 0


def test_report_states_cv_in_the_verdict(tmp_path):
    df, _ = _cv_study(tmp_path)
    rep = analyze(df, table_dir=tmp_path)
    assert any("3-fold cross-validated accuracy: 86.11% over 3 seeds" in s and "majority vote of the 3 seeds: "
               "100.00% (12 images)" in s for s in rep["verdict"]), rep["verdict"]


def test_no_fold_factor_no_section(tmp_path):
    df, preds = _cv_study(tmp_path)
    assert cross_validation(df.drop(columns=["evaluation.fold"]), preds, []) is None


def test_two_cv_configurations_are_compared_paired_when_seeds_match():
    rng = np.random.default_rng(4)
    seed_effect = rng.normal(0, 0.006, 5)
    rows = [{"run_key": f"{aug}{fold}{r}", "accuracy": 0.9 + seed_effect[r] + (0.004 if aug == "on" else 0)
             + rng.normal(0, 0.002), "replicate": r, "evaluation.fold": str(fold), "augment": aug,
             "seed_block": f"s{r}"} for aug in ("on", "off") for fold in range(3) for r in range(5)]
    df = pd.DataFrame(rows)
    rep = analyze(df)
    comp = rep["cross_validation"]["comparisons"][0]
    on = df[df["augment"] == "on"].groupby("replicate")["accuracy"].mean().to_numpy()
    off = df[df["augment"] == "off"].groupby("replicate")["accuracy"].mean().to_numpy()
    ref = ss.ttest_rel(on, off)
    assert comp["method"] == "paired t over 5 seeds" and np.isclose(comp["p"], ref.pvalue, rtol=1e-8)
    assert np.allclose(comp["ci"], [ref.confidence_interval(0.95).low, ref.confidence_interval(0.95).high])
    assert any(s.startswith("Cross-validated augment=on vs augment=off: +0.") for s in rep["verdict"]), rep["verdict"]
    assert any(c["kind"] == "cv" for c in rep["multiplicity"]["claims"])
    welch = cross_validation(df.drop(columns="seed_block"), {}, ["augment"])["comparisons"][0]
    assert welch["method"] == "Welch t" and np.isclose(welch["p"], ss.ttest_ind(on, off, equal_var=False).pvalue)
