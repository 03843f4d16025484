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


def test_lead_says_no_effect_with_the_smallest_detectable_and_timing_only_with_its_interval():
    """A null factor: the verdict leads with the spread and what the study could have seen, never with a 0%
    'largest share'; a timing difference inside run-to-run noise is no finding."""
    import numpy as np
    import pandas as pd

    from harness.report.build import analyze

    rng = np.random.default_rng(3)
    rows = [{"run_key": f"{det}{i}", "config_key": f"{det}{i}", "determinism.op_determinism": det,
             "accuracy": 0.9 + rng.normal(0, 0.01), "wall_time_s": 10 * (1 + rng.normal(0, 0.2)), "weights_hash": ""}
            for det in ("on", "off") for i in range(6)]
    rep = analyze(pd.DataFrame(rows))
    lead = rep["verdict"][0]
    assert lead.startswith("Accuracy varies with std") and "no factor (determinism.op_determinism)" in lead
    assert "no effect larger than" in lead and "power" in lead
    assert not any("explains the most accuracy variance: ω² 0.0%" in s for s in rep["verdict"])
    assert any(s.startswith("Wall time does not differ measurably") for s in rep["verdict"])


def test_runs_from_two_environments_lead_the_verdict():
    import numpy as np
    import pandas as pd

    from harness.report.build import analyze

    rng = np.random.default_rng(4)
    rows = [{"lr": lr, "accuracy": 0.9 + rng.normal(0, 0.01),
             "environment": "tensorflow 2.21.0 · keras 3.15.1" if i < 4 else "tensorflow 2.20.0 · keras 3.14.0"}
            for lr in ("a", "b") for i in range(6)]
    rep = analyze(pd.DataFrame(rows))
    assert rep["environments"] == {"tensorflow 2.21.0 · keras 3.15.1": 8, "tensorflow 2.20.0 · keras 3.14.0": 4}
    assert rep["verdict"][0].startswith("Runs from 2 environments (tensorflow 2.21.0")
    assert "environment" not in rep["factors"]  # a reserved column, not a factor


def test_one_at_a_time_effect_is_a_move_against_the_base_adjusted_over_the_moves():
    """Best vs worst would be two moves, a pair the design does not compare: the effect named is the move
    farthest from the base, its interval Bonferroni-adjusted over the 3 moves (not the 6 pairs)."""
    rng = np.random.default_rng(5)
    means = {"base": 0.70, "up": 0.80, "down": 0.60, "same": 0.70}
    rows = [{"design": "one_at_a_time", "S": lv, "base_point": str(lv == "base").lower(), "run_key": f"{lv}{r}",
             "seed_block": f"b{r}", "accuracy": m + (0.03 if lv == "up" else 0) + rng.normal(0, 0.005)}
            for r in range(4) for lv, m in means.items()]
    pair = best_vs_worst(analyze(pd.DataFrame(rows))["factors"]["S"])
    assert (pair["best"], pair["worst"], pair["adjusted_over"]) == ("up", "base", 3)
    assert pair["ci"] is not None and pair["ci"][0] > 0.1 and pair["p_holm"] < 0.01
