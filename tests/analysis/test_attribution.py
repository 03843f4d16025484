"""The attribution of a gap between two runs, against known answers: planted effects, scipy's t interval."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.analysis.attribution import attribute, gap_percentile, reproduces, seed_noise

ROLES2 = {"A": "A", "B": "B", "A+x": "A+x", "A+y": "A+y", "B-x": "A+y", "B-y": "A+x"}


def planted(effects: dict[str, float], blocks: int = 6, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Accuracies of A, B, A+x, A+y over shared seed blocks: x adds 5 pp, y 1 pp, both together 2 pp more."""
    rng = np.random.default_rng(seed)
    block = rng.normal(0, noise, blocks)  # a seed block moves every point alike: pairing removes it
    rows = []
    for point, mean in effects.items():
        for r in range(blocks):
            rows.append({"point": point, "replicate": r, "accuracy": 0.8 + mean + block[r] + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_two_keys_shapley_and_interaction():
    table = planted({"A": 0.0, "A+x": 0.05, "A+y": 0.01, "B": 0.08})
    out = attribute(table, ROLES2, ["x", "y"])
    # Shapley with two keys: x = ½[(A+x − A) + (B − A+y)] = ½[0.05 + 0.07] = 0.06; y = ½[0.01 + 0.03] = 0.02
    assert out["effects"]["x"]["effect"] == pytest.approx(0.06, abs=0.003)
    assert out["effects"]["y"]["effect"] == pytest.approx(0.02, abs=0.003)
    assert out["interaction"]["effect"] == pytest.approx(0.02, abs=0.003)
    assert out["effects"]["x"]["effect"] + out["effects"]["y"]["effect"] == pytest.approx(
        out["config_gap"]["effect"], abs=1e-12)
    assert out["level"] == pytest.approx(1 - 0.05 / 3)  # two effects and the interaction, Bonferroni


def test_interval_is_scipys_paired_t():
    table = planted({"A": 0.0, "B": 0.03}, blocks=5)
    out = attribute(table, {"A": "A", "B": "B", "A+x": "B", "B-x": "A"}, ["x"])
    grid = table.pivot(index="replicate", columns="point", values="accuracy")
    ci = stats.ttest_rel(grid["B"], grid["A"]).confidence_interval(0.95)
    assert out["effects"]["x"]["ci"] == pytest.approx([ci.low, ci.high])
    assert out["level"] == 0.95


def test_seed_noise_is_the_pooled_within_point_std():
    table = pd.DataFrame({"point": ["A"] * 3 + ["B"] * 3, "replicate": [0, 1, 2] * 2,
                          "accuracy": [0.90, 0.92, 0.94, 0.50, 0.51, 0.52]})
    noise = seed_noise(table)
    pooled = np.sqrt((np.var([0.90, 0.92, 0.94], ddof=1) + np.var([0.50, 0.51, 0.52], ddof=1)) / 2)
    assert noise == {"std": pytest.approx(pooled), "df": 4, "n": 6}


def test_gap_percentile_against_the_t_distribution():
    noise = {"std": 0.01, "df": 10, "n": 12}
    # a difference of two runs is s·√2·T: a gap of s·√2·t(0.975) sits at the 95th percentile
    gap = 0.01 * np.sqrt(2) * stats.t.ppf(0.975, 10)
    assert gap_percentile(gap, noise)["percentile"] == pytest.approx(95.0)
    assert gap_percentile(-gap, noise)["p_as_large"] == pytest.approx(0.05)
    assert gap_percentile(0.0, {"std": 0.0, "df": 3, "n": 4}) == {"percentile": 0.0, "p_as_large": 1.0}


def test_residual_is_the_gap_the_configs_leave():
    table = planted({"A": 0.0, "B": 0.03}, blocks=5)
    out = attribute(table, {"A": "A", "B": "B", "A+x": "B", "B-x": "A"}, ["x"], observed_gap=0.05)
    assert out["residual"]["effect"] == pytest.approx(0.05 - out["config_gap"]["effect"])
    lo, hi = out["residual"]["ci"]
    assert lo <= out["residual"]["effect"] <= hi


def test_reproduction_prediction_interval():
    rep = reproduces(0.9, pd.Series([0.89, 0.90, 0.91]))
    half = stats.t.ppf(0.975, 2) * 0.01 * np.sqrt(1 + 1 / 3)
    assert rep["interval"] == pytest.approx([0.9 - half, 0.9 + half])
    assert rep["within"] is True
    assert reproduces(0.5, pd.Series([0.89, 0.90, 0.91]))["within"] is False
