"""harness.analysis.sequential: the t confidence sequence against a numerical reference, and decide() on tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy import stats as ss

from harness.analysis import sequential as sq


def _reference_bf(t: float, n_eff: float, df: float, g: float) -> float:
    """BF10 by integrating the noncentral t density over the N(0, g) prior on the standardised effect."""
    def integrand(delta: float) -> float:
        return ss.nct.pdf(t, df, delta * np.sqrt(n_eff)) * ss.norm.pdf(delta, 0, np.sqrt(g))

    top, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-10, limit=400)
    return top / ss.t.pdf(t, df)


@pytest.mark.parametrize(("t", "n_eff", "df", "g"), [(0.5, 3, 2, 10), (2.5, 5, 4, 1), (4.0, 2.5, 8, 10),
                                                     (1.7, 10, 18, 0.5), (3.3, 30, 29, 10)])
def test_closed_form_bayes_factor_matches_integration(t: float, n_eff: float, df: float, g: float) -> None:
    assert np.exp(sq.log_bayes_factor(t, n_eff, df, g)) == pytest.approx(_reference_bf(t, n_eff, df, g), rel=1e-6)


def test_boundary_is_where_the_bayes_factor_reaches_one_over_alpha() -> None:
    for n_eff, df in [(3, 2), (1.5, 4), (10, 9), (30, 58)]:
        b = float(sq.t_boundary(n_eff, df, 0.05))
        assert np.isfinite(b)
        assert sq.log_bayes_factor(b, n_eff, df) == pytest.approx(np.log(20), rel=1e-9)
        assert b > ss.t.ppf(0.975, df)  # wider than the fixed-n interval: the price of looking at every n
    assert np.isinf(sq.t_boundary(2, 1, 0.05))  # two paired seeds: no finite t reaches 1/alpha with g = 10
    assert float(sq.t_boundary(10, 9, 0.01)) > float(sq.t_boundary(10, 9, 0.05))


def _paired_table(diffs: list[float], *, base: float = 0.6, order: list[int] | None = None) -> pd.DataFrame:
    rows = []
    for r, d in enumerate(diffs):
        noise = 0.003 * np.sin(r)
        rows += [{"run_key": f"k{r}a", "config_key": "a", "replicate": r, "seed_block": f"b{r}", "A": "off",
                  "accuracy": base + noise},
                 {"run_key": f"k{r}b", "config_key": "b", "replicate": r, "seed_block": f"b{r}", "A": "on",
                  "accuracy": base + noise + d}]
    df = pd.DataFrame(rows)
    return df.iloc[order] if order is not None else df


def test_paired_effect_settles_with_the_interval_of_its_ordered_blocks() -> None:
    diffs = [0.20, 0.21, 0.19]
    shuffled = _paired_table(diffs, order=[5, 0, 3, 2, 4, 1])
    out = sq.decide(shuffled, resolution_pp=1.0)
    (c,) = out["comparisons"]
    assert (c["factor"], c["a"], c["b"], c["state"]) == ("A", "on", "off", "effect")
    _, lo, hi = sq.paired_looks(np.array(diffs), 0.05)
    assert c["ci_pp"] == pytest.approx([100 * lo[-1], 100 * hi[-1]])
    assert c["diff_pp"] == pytest.approx(20.0)
    assert c["method"].startswith("paired") and c["more_seeds"] == 0
    assert out["state"] == "settled"
    assert {(lv["level"], lv["seeds"]) for lv in out["levels"]} == {("off", 3), ("on", 3)}


def test_an_open_comparison_asks_for_seeds_and_stops_at_max() -> None:
    rng = np.random.default_rng(3)
    table = _paired_table(list(rng.normal(0, 0.01, 4)))
    out = sq.decide(table, resolution_pp=1.0, max_repeats=30)
    (c,) = out["comparisons"]
    assert c["state"] == "open" and 1 <= c["more_seeds"] <= 26
    assert out["state"] == "open"
    at_max = sq.decide(table, resolution_pp=1.0, max_repeats=4)
    assert at_max["state"] == "max_reached" and at_max["comparisons"][0]["more_seeds"] == 0


def test_equivalence_inside_the_resolution() -> None:
    rng = np.random.default_rng(4)
    table = _paired_table(list(rng.normal(0.001, 0.002, 12)))
    (c,) = sq.decide(table, resolution_pp=1.0)["comparisons"]
    assert c["state"] == "no_effect" and -1 < c["ci_pp"][0] < c["ci_pp"][1] < 1


def test_two_sample_without_seed_blocks_and_the_family() -> None:
    rng = np.random.default_rng(5)
    rows = [{"lr": lv, "replicate": r, "accuracy": 0.5 + shift + rng.normal(0, 0.01), "seeds.init": str(r)}
            for lv, shift in (("low", 0.0), ("mid", 0.3), ("high", 0.301)) for r in range(6)]
    out = sq.decide(pd.DataFrame(rows), resolution_pp=5.0)
    assert out["family_size"] == 3 and out["level_each"] == pytest.approx(1 - 0.05 / 3)
    states = {(c["a"], c["b"]): c["state"] for c in out["comparisons"]}
    assert states[("low", "mid")] == "effect" and states[("low", "high")] == "effect"
    assert states[("mid", "high")] == "no_effect"
    assert all(c["method"].startswith("two-sample") for c in out["comparisons"])
    assert {c["factor"] for c in out["comparisons"]} == {"lr"}  # seeds.init is a seed source, not compared


def test_two_sample_looks_match_the_balanced_helper() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.9, 0.01, 8), rng.normal(0.91, 0.01, 8)
    rows = [{"A": lv, "replicate": r, "accuracy": x} for lv, xs in (("x", a), ("y", b)) for r, x in enumerate(xs)]
    (c,) = sq.decide(pd.DataFrame(rows), resolution_pp=0.1)["comparisons"]
    diff, lo, hi = sq.two_sample_balanced(a, b, 0.05)
    assert c["diff_pp"] == pytest.approx(100 * diff[-1]) and c["ci_pp"] == pytest.approx([100 * lo[-1], 100 * hi[-1]])


def test_bit_identical_levels_are_exact() -> None:
    rows = [{"A": lv, "replicate": r, "config_key": lv, "weights_hash": f"h{lv}", "run_key": f"{lv}{r}",
             "accuracy": acc} for lv, acc in (("p", 0.90), ("q", 0.95)) for r in range(3)]
    out = sq.decide(pd.DataFrame(rows), resolution_pp=1.0)
    (c,) = out["comparisons"]
    assert c["state"] == "effect" and c["ci_pp"] == pytest.approx([-5.0, -5.0]) and c["method"].startswith("exact")


def test_one_at_a_time_compares_on_base_runs() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for r in range(5):
        noise = rng.normal(0, 0.002, 3)
        rows += [{"design": "one_at_a_time", "A": "a0", "B": "b0", "replicate": r, "seed_block": f"s{r}",
                  "accuracy": 0.9 + noise[0]},
                 {"design": "one_at_a_time", "A": "a1", "B": "b0", "replicate": r, "seed_block": f"s{r}",
                  "accuracy": 0.6 + noise[1]},
                 {"design": "one_at_a_time", "A": "a0", "B": "b1", "replicate": r, "seed_block": f"s{r}",
                  "accuracy": 0.9 + noise[2]}]
    out = sq.decide(pd.DataFrame(rows), resolution_pp=2.0)
    by = {c["factor"]: c for c in out["comparisons"]}
    assert by["A"]["state"] == "effect" and by["A"]["diff_pp"] == pytest.approx(30, abs=1)
    assert by["B"]["state"] == "no_effect"


def test_a_lone_one_at_a_time_factor_is_compared_with_its_base_only() -> None:
    """Three moves of one factor: three comparisons against the base, not six pairs; the family, and so each
    comparison's boundary, is sized for them. A table without `base_point` cannot name the base: every pair."""
    rng = np.random.default_rng(8)
    effect = {"base": 0.0, "m1": -0.10, "m2": -0.10, "m3": 0.0}
    rows = [{"design": "one_at_a_time", "S": level, "base_point": str(level == "base").lower(), "replicate": r,
             "seed_block": f"s{r}", "accuracy": 0.8 + effect[level] + rng.normal(0, 0.003)}
            for r in range(4) for level in effect]
    out = sq.decide(pd.DataFrame(rows), resolution_pp=5.0)
    assert [(c["a"], c["b"]) for c in out["comparisons"]] == [("base", "m1"), ("base", "m2"), ("base", "m3")]
    assert out["family_size"] == 3
    assert [c["state"] for c in out["comparisons"]] == ["effect", "effect", "no_effect"]
    unmarked = sq.decide(pd.DataFrame(rows).drop(columns="base_point"), resolution_pp=5.0)
    assert unmarked["family_size"] == 6


def test_too_few_runs_stay_open() -> None:
    rows = [{"A": "x", "accuracy": 0.9}, {"A": "y", "accuracy": 0.8}]
    out = sq.decide(pd.DataFrame(rows), resolution_pp=1.0)
    assert out["state"] == "open" and out["comparisons"][0]["more_seeds"] == 1


def test_bad_settings_are_one_error() -> None:
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="resolution_pp > 0"):
        sq.decide(pd.DataFrame({"A": ["x"], "accuracy": [0.9]}), resolution_pp=0.0)
