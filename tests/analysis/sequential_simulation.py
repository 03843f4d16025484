"""Simulated sequential studies (issue 30) for tests/analysis/test_sequential_simulation.py and the long run
(benchmarks/sequential_replication.py). Seeded numpy, vectorised over studies, through the same functions
`harness.analysis.sequential.decide` uses (`two_sample_balanced`, `paired_looks`, `settle`'s rule); the test
checks that decide() on the simulated runs tables stops where the simulation stops and says the same.

A study: two levels, each run's accuracy = level mean + N(0, sd) seed noise; looks after every seed from
`min_n` (both levels gain one seed per look); it stops at the first settled look, or at `max_n`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as ss

from harness.analysis import sequential as sq

ALPHA = 0.05


def draw(rng: np.random.Generator, studies: int, shift: float, sd: float, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(studies, max_n) accuracies of levels a (mean 0.9) and b (0.9 + shift), seeds in training order."""
    return rng.normal(0.9, sd, (studies, max_n)), rng.normal(0.9 + shift, sd, (studies, max_n))


def sequential(a: np.ndarray, b: np.ndarray, resolution: float, min_n: int, paired: bool = False,
               alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """Per study: the state at the stop (effect / no_effect / open), seeds per level used, diff sign at the stop."""
    diff, lo, hi = sq.paired_looks(b - a, alpha) if paired else sq.two_sample_balanced(b, a, alpha)
    no_effect = (lo > -resolution) & (hi < resolution)
    effect = ((lo > 0) | (hi < 0)) & ~no_effect
    settled = effect | no_effect
    settled[:, : min_n - 1] = False
    stop = np.where(settled.any(axis=1), settled.argmax(axis=1), a.shape[1] - 1)
    rows = np.arange(len(a))
    state = np.where(effect[rows, stop], "effect", np.where(no_effect[rows, stop], "no_effect", "open"))
    return {"state": state, "n": stop + 1, "sign": np.sign(diff[rows, stop]), "lo": lo[rows, stop],
            "hi": hi[rows, stop]}


def fixed_peeking(a: np.ndarray, b: np.ndarray, min_n: int, alpha: float = ALPHA) -> np.ndarray:
    """Per study: did the fixed-n t test (Welch, the report's) reject at any look from min_n to max_n?"""
    hit = np.zeros(len(a), bool)
    for n in range(min_n, a.shape[1] + 1):
        hit |= ss.ttest_ind(b[:, :n], a[:, :n], axis=1, equal_var=False).pvalue < alpha
    return hit


def fixed_n_for_power(effect: float, sd: float, power: float, alpha: float = ALPHA) -> int:
    """Seeds per level a fixed-n two-sample t test needs for `power` (statsmodels TTestIndPower), rounded up."""
    from statsmodels.stats.power import TTestIndPower

    n = TTestIndPower().solve_power(effect_size=effect / sd, alpha=alpha, power=power, ratio=1.0)
    return int(math.ceil(n))


def table(a: np.ndarray, b: np.ndarray, n: int, paired: bool = False) -> pd.DataFrame:
    """The runs table of one simulated study after n seeds per level (what decide() reads)."""
    rows = [{"A": name, "replicate": r, "accuracy": float(x[r]), **({"seed_block": f"s{r}"} if paired else {})}
            for name, x in (("a", a), ("b", b)) for r in range(n)]
    return pd.DataFrame(rows)


def decide_stop(a: np.ndarray, b: np.ndarray, resolution: float, min_n: int,
                paired: bool = False) -> tuple[str, int]:
    """Run decide() after every seed of one study, the way the runner does; its state and seeds at the stop."""
    for n in range(min_n, len(a) + 1):
        out = sq.decide(table(a, b, n, paired), resolution_pp=100 * resolution, max_repeats=len(a))
        if out["state"] != "open":
            return out["comparisons"][0]["state"], n
    return "open", len(a)
