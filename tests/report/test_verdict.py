"""Verdict sentences on planted cases: the noisiest level is named; equal means still name two levels."""

import numpy as np
import pandas as pd

from harness.report.build import analyze
from harness.report.verdict import best_vs_worst


def table(groups: dict[str, np.ndarray], factor: str = "seeds.fresh") -> pd.DataFrame:
    rows = [
        {factor: level, "accuracy": a, "run_key": f"{level}{i}"}
        for level, acc in groups.items()
        for i, a in enumerate(acc)
    ]
    return pd.DataFrame(rows)


def test_spread_sentence_names_noisiest_and_calmest_level():
    # a treatment factor: seed-source factors (seeds.*) get per-level stds instead (issue 15 item 2)
    rng = np.random.default_rng(3)
    rep = analyze(table({"order": 0.6 + rng.normal(0, 0.05, 12), "dropout": 0.6 + rng.normal(0, 0.002, 12)},
                        "optimizer"))
    sentence = next(s for s in rep["verdict"] if s.startswith("The spread differs"))
    assert "with order vs" in sentence and sentence.endswith("with dropout.")


def test_equal_means_still_compare_two_distinct_levels():
    rep = analyze(table({"on": np.array([0.5, 0.52, 0.48]), "off": np.array([0.52, 0.48, 0.5])}, "det"))
    pair = best_vs_worst(rep["factors"]["det"])
    assert {pair["best"], pair["worst"]} == {"on", "off"} and pair["diff"] == 0
