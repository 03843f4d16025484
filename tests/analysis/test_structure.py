"""The design travels with the runs table: roles, seed blocks, copies; seed sources, tune's pick and flips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from harness.analysis.flips import default_pairs, flip_analysis, settings
from harness.analysis.runs_table import distinct_runs, factor_columns, factor_roles, validate_runs_table
from harness.analysis.selection import robust_selection
from harness.errors import HarnessError
from harness.report.build import analyze
from harness.tracking import _design_columns


def test_roles_design_and_seed_block_are_not_factors() -> None:
    df = validate_runs_table(pd.DataFrame({
        "accuracy": [0.9, 0.91], "design": "factorial", "seed_block": ["s0", "s1"], "lr": ["a", "b"],
        "seeds.fresh": ["none", "init"], "role.lr": "treatment", "evaluation.fold": ["0", "1"]}))
    assert factor_columns(df) == ["lr", "seeds.fresh", "evaluation.fold"]
    assert factor_roles(df) == {"lr": "treatment", "seeds.fresh": "seed_source", "evaluation.fold": "fold"}
    df["role.lr"] = "seed_source"  # another team's table states roles itself
    assert factor_roles(df)["lr"] == "seed_source"


@pytest.mark.parametrize(("column", "value"), [("role.lr", "knob"), ("design", "random")])
def test_bad_design_columns_are_named(column: str, value: str) -> None:
    with pytest.raises(HarnessError, match=f"row 1, column '{column}'"):
        validate_runs_table(pd.DataFrame({"accuracy": [0.9], "lr": ["a"], column: [value]}))


def test_tracking_reads_design_tags_back() -> None:
    tags = {"harness.design": "one_at_a_time", "harness.seed_block": "abc", "harness.role.seeds.fresh": "seed_source",
            "harness.run_key": "k"}
    assert _design_columns(tags) == {"design": "one_at_a_time", "seed_block": "abc", "role.seeds.fresh": "seed_source"}
    assert _design_columns({}) == {}  # runs logged before the tags existed
    assert _design_columns({"harness.base_point": "true"}) == {"base_point": "true"}


def test_one_at_a_time_levels_are_compared_with_the_base_in_every_test() -> None:
    """The Welch pairwise rows and the paired rows both hold base-vs-move only; the base comes from the marked
    runs for a lone factor and from the most frequent level when other factors move."""
    from harness.analysis.levels import mean_tests
    from harness.analysis.structure import base_level, compared_pairs

    rng = np.random.default_rng(3)
    rows = [{"design": "one_at_a_time", "S": level, "base_point": str(level == "b").lower(), "seed_block": f"s{r}",
             "weights_hash": f"{level}{r}", "accuracy": 0.8 + rng.normal(0, 0.01)}
            for r in range(4) for level in ("m1", "b", "m2")]
    df = pd.DataFrame(rows)
    assert base_level(df, "S") == "b" and compared_pairs(df, "S", ["m1", "b", "m2"]) == [("m1", "b"), ("b", "m2")]
    tests = mean_tests(df, "S")
    assert [(r["a"], r["b"]) for r in tests["paired"]["pairwise"]] == [("m1", "b"), ("b", "m2")]
    assert len(tests["pairwise"]) == 2 and all("b" in (r["a"], r["b"]) for r in tests["pairwise"])
    assert base_level(df.drop(columns="base_point"), "S") is None  # a lone factor: no most frequent level
    two = pd.DataFrame([{"design": "one_at_a_time", "A": a, "B": b, "accuracy": 0.8}
                        for a, b in (("a0", "b0"), ("a1", "b0"), ("a2", "b0"), ("a0", "b1"))])
    assert base_level(two, "A") == "a0" and compared_pairs(two, "A", ["a1", "a0", "a2"]) == [("a1", "a0"), ("a0", "a2")]
    assert base_level(two.assign(design="factorial"), "A") is None


def test_planned_runs_carry_design_roles_and_seed_blocks() -> None:
    from harness.study.design import PlannedRun, factor_role

    assert [factor_role(k) for k in ("seeds.fresh", "evaluation.fold", "model.depth")] == [
        "seed_source", "fold", "treatment"]
    fields = PlannedRun.__dataclass_fields__
    assert fields["design"].default == "factorial"


def test_copies_within_a_config_count_once() -> None:
    df = pd.DataFrame({"accuracy": [0.9, 0.9, 0.9, 0.91], "config_key": ["c", "c", "d", "c"],
                       "weights_hash": ["h", "h", "h", "g"], "f": ["x", "x", "y", "x"]})
    kept = distinct_runs(df)
    assert len(kept) == 3 and kept.attrs["copies_dropped"] == 1  # same hash in another config is not a copy


def test_seed_sources_are_stds_against_the_all_fixed_level() -> None:
    rng = np.random.default_rng(7)
    rows = [{"seeds.fresh": "none", "config_key": "fixed", "weights_hash": "same", "seed_block": "b0",
             "accuracy": 0.9, "replicate": r} for r in range(5)]
    order = 0.9 + rng.normal(0, 0.006, 5)
    rows += [{"seeds.fresh": "order", "config_key": f"o{r}", "weights_hash": f"o{r}", "seed_block": f"o{r}",
              "accuracy": a, "replicate": r} for r, a in enumerate(order)]
    rep = analyze(pd.DataFrame(rows))
    spread = rep["factors"]["seeds.fresh"]["seed_spread"]
    assert spread["fixed_level"] == "none" and spread["fixed_deterministic"]
    row = next(r for r in spread["levels"] if r["level"] == "order")
    s = np.std(order, ddof=1)
    chi2 = ss.chi2.ppf([0.975, 0.025], 4)
    assert row["std_ci"] == pytest.approx(list(s * np.sqrt(4 / chi2)))
    assert "seeds.fresh" not in rep["decomposition"]["factors"]  # not a mean effect
    assert not any(c["factor"] == "seeds.fresh" and c["kind"] == "mean" for c in rep["multiplicity"]["claims"])
    assert any(s.startswith("Seed sources (seeds.fresh): accuracy std per level order") for s in rep["verdict"])
    json.dumps(rep, allow_nan=False)  # report.json must serialise


def test_seed_source_std_is_pooled_within_other_settings() -> None:
    rows = [{"seeds.fresh": fresh, "lr": lr, "seed_block": "b0" if fresh == "none" else f"o{r}",
             "accuracy": 0.9 + (0.01 if lr == "b" else 0) + (0.002 * r if fresh == "order" else 0)}
            for fresh in ("none", "order") for lr in ("a", "b") for r in range(4)]
    spread = analyze(pd.DataFrame(rows))["factors"]["seeds.fresh"]["seed_spread"]
    fixed, order = spread["levels"]
    assert spread["fixed_deterministic"] and fixed["std"] == pytest.approx(0.0)  # lr's +1 pp is not seed spread
    assert order["df"] == 6 and order["std"] == pytest.approx(np.std([0, 0.002, 0.004, 0.006], ddof=1))


def test_seed_source_with_nondeterministic_fixed_level_is_tested() -> None:
    rng = np.random.default_rng(8)
    fixed, init = 0.9 + rng.normal(0, 0.001, 8), 0.9 + rng.normal(0, 0.01, 8)
    rows = [{"seeds.fresh": "none", "seed_block": "b0", "accuracy": a} for a in fixed]
    rows += [{"seeds.fresh": "init", "seed_block": f"i{i}", "accuracy": a} for i, a in enumerate(init)]
    rep = analyze(pd.DataFrame(rows))
    row = next(r for r in rep["factors"]["seeds.fresh"]["seed_spread"]["levels"] if r["level"] == "init")
    ratio = np.var(init, ddof=1) / np.var(fixed, ddof=1)
    assert row["p_vs_fixed"] == pytest.approx(2 * ss.f.sf(ratio, 7, 7), rel=1e-8)  # two-sided F test
    assert row["p_vs_fixed"] == pytest.approx(ss.bartlett(init, fixed).pvalue, abs=0.01)
    claim = next(c for c in rep["multiplicity"]["claims"] if c["kind"] == "seed_source")
    assert claim["reject"]


def test_alpha_sets_the_family_level() -> None:
    rng = np.random.default_rng(9)
    df = pd.DataFrame({"lr": ["a"] * 6 + ["b"] * 6, "accuracy": np.r_[rng.normal(0.9, 0.006, 6),
                                                                        rng.normal(0.907, 0.006, 6)]})
    loose, strict = analyze(df, alpha=0.2), analyze(df, alpha=1e-6)
    assert loose["multiplicity"]["alpha"] == 0.2 and strict["multiplicity"]["alpha"] == 1e-6
    p = loose["multiplicity"]["claims"][0]["p_holm"]
    assert loose["multiplicity"]["claims"][0]["reject"] == (p < 0.2)
    assert not strict["multiplicity"]["claims"][0]["reject"]
    assert any("α=1e-06" in s for s in strict["verdict"])


def test_omega_squared_ranks_without_favouring_many_levels() -> None:
    rng = np.random.default_rng(10)
    rows = [{"many": f"m{i % 8}", "two": "on" if j % 2 else "off", "accuracy": 0.9 + (0.004 if j % 2 else 0)
             + rng.normal(0, 0.003)} for i in range(8) for j in range(6)]
    rep = analyze(pd.DataFrame(rows))
    terms = {t["term"]: t for t in rep["decomposition"]["terms"]}
    assert rep["verdict"][1].startswith("two explains the most accuracy variance")
    assert "its largest cause is two" in rep["verdict"][0]
    assert terms["two"]["omega_squared"] > terms["many"]["omega_squared"]


def test_robust_pick_needs_two_runs() -> None:
    table = pd.DataFrame({"candidate": ["lucky", "a", "a", "a"], "accuracy": [0.99, 0.90, 0.91, 0.92]})
    res = robust_selection({"lucky": 0.99, "a": 0.95}, table, "candidate")
    lucky = res["candidates"][0]
    assert lucky["n"] == 1 and lucky["ci"] is None and res["robust_best"] == "a"


def test_mcnemar_pairs_and_vote_stay_within_a_setting() -> None:
    df = pd.DataFrame({"run_key": list("abcd"), "config_key": list("wxyz"), "replicate": [0, 1, 0, 1],
                       "lr": ["1", "1", "2", "2"], "accuracy": 0.9})
    keys = list("abcd")
    assert default_pairs(df, keys) == [("a", "b"), ("c", "d")]  # config_key differs per replicate (seeds)
    label = np.array([0, 1, 0, 1])
    preds = {k: pd.DataFrame({"id": range(4), "label": label, "pred": p})
             for k, p in zip(keys, ([0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0]), strict=True)}
    fl = flip_analysis(preds, default_pairs(df, keys), setting=settings(df, keys))
    assert fl["majority_vote_runs"] == 2 and fl["majority_vote_setting"] == "1"
    assert fl["majority_vote_accuracy"] == pytest.approx(1.0)  # mixing lr=1 with lr=2 would score 0.5


def test_one_at_a_time_failures_count_base_runs_only() -> None:
    from harness.analysis.failures import failure_table

    rows = [{"A": a, "B": b, "design": "one_at_a_time", "accuracy": np.nan if (b == "b1" and i < 3) else 0.9,
             "status": "FAILED" if (b == "b1" and i < 3) else "FINISHED"}
            for a, b in (("a0", "b0"), ("a1", "b0"), ("a0", "b1")) for i in range(5)]
    df = pd.DataFrame(rows)
    assert [(r["level"], r["failed"], r["runs"]) for r in failure_table(df, "A")["levels"]] == [
        ("a0", 0, 5), ("a1", 0, 5)]  # B's failures are not a0's
    assert [(r["level"], r["failed"]) for r in failure_table(df, "B")["levels"]] == [("b0", 0), ("b1", 3)]


def test_omega_squared_matches_the_statsmodels_anova_table() -> None:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    from harness.analysis.levels import mean_tests

    rng = np.random.default_rng(12)
    df = pd.DataFrame({"f": np.repeat(["a", "b", "c"], [4, 5, 6]), "accuracy": 0.9 + rng.normal(0, 0.005, 15)})
    df.loc[df["f"] == "c", "accuracy"] += 0.004
    table = anova_lm(smf.ols("accuracy ~ C(f)", data=df).fit(), typ=2)
    ss_b, ss_w = table["sum_sq"]
    ms_w = ss_w / table["df"].iloc[1]
    assert mean_tests(df, "f")["omega_squared"] == pytest.approx((ss_b - 2 * ms_w) / (ss_b + ss_w + ms_w), rel=1e-8)


def test_one_role_rule_reads_role_columns_everywhere() -> None:
    """Issue 28 item 5: decomposition and CV inferred roles from the `seeds.` prefix and ignored `role.<factor>`."""
    from harness.analysis.cv import cross_validation
    from harness.analysis.power import seeds_needed

    rng = np.random.default_rng(9)
    df = pd.DataFrame({"B": ["x", "y"] * 4, "seeds.x": ["a", "a"] + ["b"] * 6, "role.seeds.x": "treatment",
                       "accuracy": 0.9 + rng.normal(0, 0.01, 8)})
    assert seeds_needed(df)["n_per_group"] == 2  # seeds.x is a treatment here: its smallest level counts
    rows = [{"split": str(k), "replicate": r, "role.split": "fold", "accuracy": 0.9 + rng.normal(0, 0.01)}
            for k in range(3) for r in range(4)]
    cv = cross_validation(pd.DataFrame(rows), {}, ["split"])
    assert cv is not None and cv["folds"] == 3 and cv["groups"][0]["n_seeds"] == 4
