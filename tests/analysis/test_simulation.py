"""Calibration in the designs people run (issue 15): false-positive rates of the verdict's Holm family,
coverage of the printed intervals, power for planted effects. Seeded, vectorised scipy (tests/analysis/
simulation.py); each design first checks that the report computes the same p-values on a real runs table,
so the simulated family is the verdict's family. The long version: benchmarks/stats_simulation.py.
"""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest
import simulation as sim
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from harness.report.build import analyze
from harness.report.verdict import best_vs_worst

STUDIES = 2000  # per design; the band [0.03, 0.07] is ±1.4 SE at 200 studies, ±4.5 SE here
BAND = (0.03, 0.07)


def _claims(rep: dict, factor: str) -> dict[str, float]:
    return {c["kind"]: c["p"] for c in rep["multiplicity"]["claims"] if c["factor"] == factor}


def test_holm_helper_matches_statsmodels() -> None:
    p = np.random.default_rng(1).random((40, 3))
    p[::7, 1] = np.nan
    gc.freeze()  # multipletests runs gc.collect() on every call
    try:
        for row, adj in zip(p, sim.holm_adjust(p), strict=True):
            keep = ~np.isnan(row)
            assert adj[keep] == pytest.approx(multipletests(row[keep], method="holm")[1], rel=1e-12)
    finally:
        gc.unfreeze()


def test_factorial_with_identical_copies() -> None:
    rng = np.random.default_rng(11)
    y = [rng.normal(0.9, sim.SIGMA, 4) for _ in range(3)]
    rows = [{"A": "fixed", "config_key": "c0", "weights_hash": f"w{i}", "replicate": 3 * i + c, "accuracy": a}
            for i, a in enumerate(y[0]) for c in range(3)]  # every training of this level appears 3×
    rows += [{"A": f"l{k}", "config_key": f"c{k}", "weights_hash": f"v{k}{i}", "replicate": i, "accuracy": a}
             for k in (1, 2) for i, a in enumerate(y[k])]
    rep = analyze(pd.DataFrame(rows))
    assert rep["design"]["copies_dropped"] == 8
    claims = _claims(rep, "A")
    assert claims["mean"] == pytest.approx(ss.f_oneway(*y, equal_var=False).pvalue, rel=1e-8)
    assert claims["spread"] == pytest.approx(ss.bartlett(*y).pvalue, rel=1e-8)

    r = sim.factorial_copies(np.random.default_rng(20), STUDIES)
    fwer = sim.family_rejects(r["family"]).mean()
    assert BAND[0] <= fwer <= BAND[1], fwer
    assert (r["anova_copies_counted"] < 0.05).mean() > 0.12  # the bug: copies counted as runs


def test_paired_seed_blocks() -> None:
    rng = np.random.default_rng(12)
    block = rng.normal(0, sim.SIGMA, 5)
    a, c = 0.9 + block + rng.normal(0, 0.003, 5), 0.9 + block + rng.normal(0, 0.003, 5)
    rows = [{"lr": lv, "seed_block": f"s{i}", "replicate": i, "accuracy": v}
            for lv, ys in (("a", a), ("c", c)) for i, v in enumerate(ys)]
    rep = analyze(pd.DataFrame(rows))
    claims = _claims(rep, "lr")
    assert rep["design"]["paired"]["lr"]
    assert claims["mean"] == pytest.approx(ss.ttest_rel(a, c).pvalue, rel=1e-8)  # AnovaRM F = t² at 2 levels
    assert claims["spread"] == pytest.approx(ss.pearsonr(a + c, a - c).pvalue, rel=1e-8)
    assert rep["seeds_needed"]["design"] == "paired" and rep["seeds_needed"]["n_per_group"] == 5

    r = sim.paired(np.random.default_rng(21), STUDIES)
    fwer = sim.family_rejects(r["family"]).mean()
    assert BAND[0] <= fwer <= BAND[1], fwer
    cover = np.mean((r["diff_ci"][:, 0] <= 0) & (0 <= r["diff_ci"][:, 1]))
    assert 0.93 <= cover <= 0.97, cover
    assert (r["bartlett_p"] < 0.05).mean() < 0.02  # why the paired spread test: unpaired ones lose their size


def test_one_at_a_time_contrasts_base_runs_only() -> None:
    rng = np.random.default_rng(13)
    base, a1, a2 = (rng.normal(0.9, sim.SIGMA, 5) for _ in range(3))
    b1 = rng.normal(0.92, sim.SIGMA, 5)
    rows = [{"A": a, "B": b, "design": "one_at_a_time", "accuracy": v}
            for a, b, ys in (("a0", "b0", base), ("a1", "b0", a1), ("a2", "b0", a2), ("a0", "b1", b1))
            for v in ys]
    rep = analyze(pd.DataFrame(rows))
    a0 = next(r for r in rep["factors"]["A"]["levels"] if r["level"] == "a0")
    assert a0["n"] == 5 and a0["mean"] == pytest.approx(base.mean())
    assert _claims(rep, "A")["mean"] == pytest.approx(ss.f_oneway(base, a1, a2, equal_var=False).pvalue, rel=1e-8)

    r = sim.one_at_a_time(np.random.default_rng(22), STUDIES)
    fwer = sim.family_rejects(r["family"]).mean()
    assert BAND[0] <= fwer <= BAND[1], fwer
    assert (r["pooled_base_p"] < 0.05).mean() > 0.2  # the bug: b1 runs pooled into A's base level


def test_unbalanced_with_failures() -> None:
    rows = [{"opt": lv, "accuracy": np.nan if fail else 0.9 + 0.001 * i, "status": "FAILED" if fail else "FINISHED"}
            for lv, n_fail in (("x", 3), ("y", 0), ("z", 1)) for i in range(10) for fail in [i < n_fail]]
    rep = analyze(pd.DataFrame(rows))
    fail = rep["factors"]["opt"]["failures"]
    assert [(r["level"], r["failed"], r["runs"]) for r in fail["levels"]] == [("x", 3, 10), ("y", 0, 10), ("z", 1, 10)]
    table = np.array([[3, 7], [0, 10], [1, 9]])
    mc = ss.MonteCarloMethod(n_resamples=9999, rng=np.random.default_rng(0))
    assert _claims(rep, "opt")["failures"] == pytest.approx(ss.fisher_exact(table, method=mc).pvalue, rel=1e-8)
    assert any(s.startswith("Failure rates do not differ detectably by opt (Holm p=") for s in rep["verdict"])
    rows = [{"opt": lv, "accuracy": np.nan if fail else 0.9 + 0.001 * i, "status": "FAILED" if fail else "FINISHED"}
            for lv, n_fail in (("x", 8), ("y", 0)) for i in range(10) for fail in [i < n_fail]]
    rep = analyze(pd.DataFrame(rows))
    assert any(s.startswith("Failures differ by opt: x 8/10, y 0/10 (Fisher exact, Holm p=") for s in rep["verdict"])

    r = sim.failures(np.random.default_rng(23), 300)
    size = np.nanmean(r["family"] < 0.05, axis=0)
    assert np.all((size[:2] >= BAND[0]) & (size[:2] <= BAND[1])), size
    # Fisher's test is discrete: at 10 runs per level its size is ~0.025, so the family sits below 0.05
    assert 0.015 <= sim.family_rejects(r["family"]).mean() <= BAND[1]


@pytest.mark.parametrize("n", [3, 5])
def test_interval_coverage(n: int) -> None:
    cover = sim.mean_std_coverage(np.random.default_rng(30 + n), 4000, n)
    assert 0.93 <= cover["mean"] <= 0.97 and 0.93 <= cover["std"] <= 0.97, cover
    welch = sim.welch_diff_coverage(np.random.default_rng(40 + n), 4000, n)
    assert 0.93 <= welch <= 0.97, welch


def test_harness_intervals_are_the_simulated_ones() -> None:
    from harness.analysis.intervals import mean_ci, std_bounds, std_ci

    x = np.random.default_rng(5).normal(0.9, sim.SIGMA, 3)
    ref = ss.ttest_1samp(x, 0.9).confidence_interval(0.95)
    assert mean_ci(x) == pytest.approx([ref.low, ref.high], rel=1e-12)
    lo, hi = std_bounds(np.std(x, ddof=1), 2)
    assert std_ci(x) == pytest.approx([lo, hi], rel=1e-12)


def test_power_for_planted_effects() -> None:
    # a 2 pp shift at 0.6 pp seed std survives the Holm family with 5 runs per level
    assert sim.shift_power(np.random.default_rng(50), STUDIES, 5) >= 0.9
    # 3× the variance at one level needs ~45 runs per level for Bartlett at power 0.9
    assert sim.variance_power(np.random.default_rng(51), STUDIES, 45) >= 0.9
    assert sim.variance_power(np.random.default_rng(52), STUDIES, 10) < 0.5  # and is hopeless at 10


def test_crossed_seed_sources_fitted_jointly() -> None:
    r = sim.crossed(np.random.default_rng(60), 1)
    y = r["y"][0]
    rows = [{"seeds.order": str(i), "seeds.init": str(j), "accuracy": 0.9 + 0.003 * y[i, j, 0]}
            for i in range(6) for j in range(6)]
    rep = analyze(pd.DataFrame(rows))
    order, init = rep["random_effects"]["seeds.order"], rep["random_effects"]["seeds.init"]
    assert order["crossed"] == ["seeds.init"] and init["crossed"] == ["seeds.order"]
    assert order["partial_share_ci"] == pytest.approx(list(r["a_ci"][0]), rel=1e-8)  # joint F, not one at a time
    assert init["partial_share_ci"] == pytest.approx(list(r["b_ci"][0]), rel=1e-8)
    # no exact interval for the share of a single run's variance: the generalized CI from the same table
    from harness.analysis.intervals import share_gci

    y = 0.003 * r["y"][0, :, :, 0]
    ss_a, ss_b = 6 * np.sum((y.mean(axis=1) - y.mean()) ** 2), 6 * np.sum((y.mean(axis=0) - y.mean()) ** 2)
    ss_e = np.sum((y - y.mean()) ** 2) - ss_a - ss_b
    assert order["share_ci"] == pytest.approx(share_gci([ss_a, ss_b, ss_e], [5, 5, 25], [6, 6], 0), rel=1e-6)
    assert init["share_ci"] == pytest.approx(share_gci([ss_b, ss_a, ss_e], [5, 5, 25], [6, 6], 0), rel=1e-6)
    cover = sim.crossed_share_coverage(np.random.default_rng(64), 1000, share_gci)
    assert np.all((cover.mean(axis=0) >= 0.93) & (cover.mean(axis=0) <= 0.97)), cover.mean(axis=0)

    r = sim.crossed(np.random.default_rng(61), STUDIES)
    for name in ("a", "b"):
        cover = r[f"{name}_covered"].mean()
        assert 0.93 <= cover <= 0.97, (name, cover)
    assert (r["a_p"] < 0.05).mean() >= 0.9 and (r["b_p"] < 0.05).mean() >= 0.8  # 0.98 / 0.86 at 6 × 6 × 1
    r = sim.crossed(np.random.default_rng(62), STUDIES, reps=2)
    assert (r["a_p"] < 0.05).mean() >= 0.9 and (r["b_p"] < 0.05).mean() >= 0.9  # 1.00 / 0.97 with 2 runs per cell


def _two_by_two_table(r: dict) -> pd.DataFrame:
    return pd.DataFrame([{"A": f"a{i}", "B": f"b{j}", "accuracy": v} for (i, j), ys in r["y"].items() for v in ys[0]])


@pytest.mark.parametrize("case", ["interaction", "unbalanced"])
def test_treatments_within_the_multi_factor_model(case: str) -> None:
    """Issue 28 item 1: a 2 × 2 with an interaction (B helps only at a1) and equal seed spread in every cell, and
    unbalanced cells (8/3/3/8) with +2 pp on B only. Tested one factor at a time, the spread claims fired in 69%
    and the null A 'beyond seed noise' in 13%; within the model the family holds and the intervals cover."""
    kw = {"interaction": {"ab": 0.02}, "unbalanced": {"cells": (8, 3, 3, 8), "b": 0.02}}[case]
    one = sim.two_by_two(np.random.default_rng(70), 1, **kw)
    rep = analyze(_two_by_two_table(one))
    got = [c["p"] for c in rep["multiplicity"]["claims"]]
    assert got == pytest.approx(list(one["family"][0]), rel=1e-8)  # the simulated family is the verdict's
    bw = best_vs_worst(rep["factors"]["B"], rep["multiplicity"]["size"])
    assert (bw["best"], bw["worst"]) == ("b1", "b0") and bw["ci"] == pytest.approx(list(one["ci_b"][0]), rel=1e-8)
    unbalanced = any("the cells are unbalanced (runs per cell: a0 · b0 8, a0 · b1 3" in s for s in rep["verdict"])
    assert unbalanced == (case == "unbalanced")

    r = sim.two_by_two(np.random.default_rng(71), STUDIES, **kw)
    reject = sim.holm_adjust(r["family"]) < sim.ALPHA
    false = reject[:, [1, 3]] if case == "interaction" else reject[:, [0, 1, 3]]
    assert false.any(axis=1).mean() <= 0.07, false.mean(axis=0)
    assert reject[:, 2].mean() >= 0.9  # the planted effects are found
    old = sim.holm_adjust(r["pooled"]) < sim.ALPHA
    assert (old[:, 1].mean() > 0.5) if case == "interaction" else (old[:, 0].mean() > 0.1)  # the old behaviour
    both = sim.covered(r["ci_a"], r["truth"][0]) & sim.covered(r["ci_b"], r["truth"][1])
    assert 0.95 <= both.mean() <= 0.99, both.mean()  # Bonferroni: simultaneous coverage >= 95%, conservative


def test_copies_by_weights_hash_whatever_the_keys_say() -> None:
    """Issue 28 item 2a: a fresh seed the training never uses gives new config_keys to the same weights."""
    rng = np.random.default_rng(14)
    y = [rng.normal(0.9, sim.SIGMA, 4) for _ in range(3)]
    rows = [{"A": "off", "seeds.augment": str(10 * i + c), "config_key": f"k{i}{c}", "weights_hash": f"w{i}",
             "accuracy": a} for i, a in enumerate(y[0]) for c in range(3)]
    rows += [{"A": f"l{k}", "seeds.augment": str(i), "config_key": f"c{k}{i}", "weights_hash": f"v{k}{i}",
              "accuracy": a} for k in (1, 2) for i, a in enumerate(y[k])]
    rep = analyze(pd.DataFrame(rows))
    assert rep["design"]["copies_dropped"] == 8
    assert _claims(rep, "A")["mean"] == pytest.approx(ss.f_oneway(*y, equal_var=False).pvalue, rel=1e-8)
    assert _claims(rep, "A")["spread"] == pytest.approx(ss.bartlett(*y).pvalue, rel=1e-8)
    assert any(s.startswith("8 bit-identical copies (same weights_hash") for s in rep["verdict"])

    rows = [{"A": "off", "seeds.augment": str(i), "config_key": f"k{i}", "weights_hash": "w", "accuracy": 0.9}
            for i in range(5)]  # one training under five keys
    rows += [{"A": f"l{k}", "seeds.augment": str(i), "config_key": f"c{k}{i}", "weights_hash": f"v{k}{i}",
              "accuracy": 0.9 + 0.006 * rng.standard_normal()} for k in (1, 2) for i in range(5)]
    rep = analyze(pd.DataFrame(rows))
    assert rep["factors"]["A"]["mean_tests"]["excluded_levels"] == ["off"]  # one distinct run: left out
    r = sim.unused_seed(np.random.default_rng(19), STUDIES)
    assert sim.family_rejects(r["family"]).mean() <= 0.07
    with np.errstate(all="ignore"):
        before = sim.holm_adjust(r["family_copies_counted"]) < 0.05
    assert before[:, 0].mean() > 0.3 and before[:, 1].mean() > 0.99  # counted by config_key: 0.35 / 1.00


@pytest.mark.parametrize("factorial", [False, True])
def test_identical_replicates_without_hashes_are_not_tested(factorial: bool) -> None:
    """Issue 28 item 2b: no weights_hash and identical accuracies within every level: zero spread is not seed
    noise; the verdict used to say 'residual std 0.00 pp' and 'beyond seed noise' (family-wise error 1.00)."""
    rng = np.random.default_rng(15)
    rejected = 0
    for _ in range(3):  # no randomness in the outcome: nothing is tested whatever the level means
        means = rng.normal(0.9, sim.SIGMA, 4)
        cells = [("a0", "b0"), ("a0", "b1"), ("a1", "b0"), ("a1", "b1")] if factorial else [("a0",), ("a1",), ("a2",)]
        rows = [{"A": c[0], **({"B": c[1]} if factorial else {}), "accuracy": means[k]}
                for k, c in enumerate(cells) for _ in range(5)]
        rep = analyze(pd.DataFrame(rows))
        rejected += any(c["reject"] for c in rep["multiplicity"]["claims"])
        assert rep["multiplicity"]["size"] == 0 and not rep["decomposition"]["testable"]
        assert any("identical: zero spread is not seed noise" in s for s in rep["verdict"])
        assert not any("residual std 0.00" in s or "beyond seed noise" in s for s in rep["verdict"])
    assert rejected == 0


def test_one_at_a_time_recognised_without_a_design_column() -> None:
    """Issue 28 item 4: a base plus single changes without `design` was analysed as a factorial (0.285)."""
    rng = np.random.default_rng(16)
    base, a1, a2 = (rng.normal(0.9, sim.SIGMA, 5) for _ in range(3))
    b1 = rng.normal(0.92, sim.SIGMA, 5)
    rows = [{"A": a, "B": b, "accuracy": v}
            for a, b, ys in (("a0", "b0", base), ("a1", "b0", a1), ("a2", "b0", a2), ("a0", "b1", b1)) for v in ys]
    rep = analyze(pd.DataFrame(rows))
    assert rep["design"]["kind"] == "one_at_a_time" and rep["design"]["kind_inferred"]
    assert _claims(rep, "A")["mean"] == pytest.approx(ss.f_oneway(base, a1, a2, equal_var=False).pvalue, rel=1e-8)
    assert any(s.startswith("No `design` column: every run is the base point") for s in rep["verdict"])
    full = pd.DataFrame(rows + [{"A": "a1", "B": "b1", "accuracy": 0.9}] * 3)  # a run moving both: factorial
    assert analyze(full)["design"]["kind"] == "factorial"


@pytest.mark.slow
def test_seeds_needed_delivers_its_power() -> None:
    """Issue 30 (the fixed-n sentence): at the recommended n the verdict's test reached 0.64–0.72 (0.125 after a
    crossed seed pilot, whose residual after seed effects it took for a single run's noise). Now: a single run's
    noise, t power at the verdict's α/m, averaged over the pilot estimate's uncertainty."""
    from harness.analysis.power import seeds_needed

    rng = np.random.default_rng(80)
    y = (rng.normal(0, np.sqrt(0.6), (6, 1)) + rng.normal(0, np.sqrt(0.2), (1, 6))
         + rng.normal(0, np.sqrt(0.2), (6, 6))) * 0.01
    pilot = pd.DataFrame([{"seeds.order": str(i), "seeds.init": str(j), "accuracy": 0.9 + y[i, j]}
                          for i in range(6) for j in range(6)])
    need = analyze(pilot, delta_pp=1.0)["seeds_needed"]
    s, dof = sim.crossed_single_run_std(y)
    assert need["sigma"] == pytest.approx(s, rel=1e-8) and need["sigma_df"] == pytest.approx(dof, rel=1e-8)
    assert need["tests"] == 2 and need["n_needed"] == seeds_needed(None, sigma=s, sigma_df=dof, delta_pp=1.0,
                                                                   n_per_group=36, tests=2)["n_needed"]

    def recommend(s: float, dof: float, tests: int) -> int:
        return seeds_needed(None, sigma=s, sigma_df=dof, n_per_group=5, delta_pp=1.0, tests=tests)["n_needed"]

    for design in ("two_levels", "crossed", "factorial"):
        got = sim.pilot_then_study(np.random.default_rng(81), 200, design, recommend)["power"]
        assert 0.75 <= got <= 0.85, (design, got)


def test_crossed_seed_components_in_the_verdict() -> None:
    """Issue 28 item 3: the verdict never mentioned either seed factor of a crossed design (0 of 200 studies); it
    now states both, each with its share of a single run's variance and the generalized interval that covers
    (test_crossed_seed_sources_fitted_jointly), and that they are indistinguishable when the intervals overlap."""
    r = sim.crossed(np.random.default_rng(63), 1)
    rows = [{"seeds.order": str(i), "seeds.init": str(j), "accuracy": 0.9 + 0.003 * r["y"][0, i, j, 0]}
            for i in range(6) for j in range(6)]
    rep = analyze(pd.DataFrame(rows))
    text = next(s for s in rep["verdict"] if s.startswith("Seed components (fitted jointly, crossed)"))
    cis = []
    for name in ("seeds.order", "seeds.init"):
        re = rep["random_effects"][name]
        cis.append(re["share_ci"])
        assert (f"{name} std {100 * re['sd_factor']:.2f} pp, {100 * re['share']:.1f}% of a single run's variance "
                f"(95% CI {100 * re['share_ci'][0]:.1f}%–{100 * re['share_ci'][1]:.1f}%, generalized CI)") in text
    assert ("indistinguishable in size" in text) == (cis[0][0] <= cis[1][1] and cis[1][0] <= cis[0][1])


def test_seed_sources_of_similar_size_are_not_ranked() -> None:
    """Issue 28 item 6: overlapping intervals → 'indistinguishable in size'; clearly different spreads are not."""
    rng = np.random.default_rng(17)

    def verdict(sd_order: float) -> str:
        rows = [{"seeds.fresh": lv, "seed_block": "b0" if lv == "none" else f"{lv}{i}",
                 "accuracy": 0.9 + (0.0 if lv == "none" else rng.normal(0, {"init": 0.006, "order": sd_order}[lv]))}
                for lv in ("none", "init", "order") for i in range(12)]
        return next(s for s in analyze(pd.DataFrame(rows))["verdict"] if s.startswith("Seed sources (seeds.fresh)"))

    assert "indistinguishable in size" in verdict(0.006)
    assert "indistinguishable in size" not in verdict(0.0005)


def test_smallest_detectable_difference_holds_in_a_balanced_factorial() -> None:
    """Issue 28 item 1: in a balanced factorial the power sentence promised 0.8 where the test it described
    reached 0.035. A difference of the stated size is now found by the verdict's test (within the model, Holm over
    its 4 claims) at about the promised power, whatever the other factor does."""
    from harness.analysis.power import seeds_needed

    one = sim.two_by_two(np.random.default_rng(72), 1, b=0.02)
    need = analyze(_two_by_two_table(one))["seeds_needed"]
    assert need["tests"] == 4 and need["n_per_group"] == 16 and need["alpha_per_test"] == pytest.approx(0.0125)
    mde = seeds_needed(None, sigma=sim.SIGMA, n_per_group=16, tests=4)["mde_pp"] / 100
    for b in (0.0, 0.02):
        r = sim.two_by_two(np.random.default_rng(73), STUDIES, a=mde, b=b)
        got = (sim.holm_adjust(r["family"])[:, 0] < sim.ALPHA).mean()
        assert 0.75 <= got <= 0.85, (b, got)
