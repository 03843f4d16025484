"""Intervals that hold at small n under normal seed noise.

- Mean: Student t interval, mean ± t(1−α/2, n−1)·s/√n (scipy.stats.ttest_1samp(...).confidence_interval).
- Std: chi-square interval, s·√((n−1)/χ²(1−α/2, n−1)) to s·√((n−1)/χ²(α/2, n−1)) (scipy.stats.chi2).

Bootstrap intervals were dropped: at n = 3 a resample has at most 10 distinct values and the BCa interval
covers the mean far less often than 95% (for .80/.81/.82 it gave 80.3–82.0% where t gives 78.5–83.5%).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as ss

from harness.analysis.common import num, quiet


def mean_ci(x: np.ndarray, level: float = 0.95) -> list[float | None] | None:
    """Student t interval of the mean (None for n < 2 or no spread)."""
    x = np.asarray(x, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    with quiet():
        ci = ss.ttest_1samp(x, 0.0).confidence_interval(level)
    return [num(ci.low), num(ci.high)]


def std_ci(x: np.ndarray, level: float = 0.95) -> list[float | None] | None:
    """Chi-square interval of the standard deviation (None for n < 2)."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return None
    df = len(x) - 1
    s2 = float(np.var(x, ddof=1))
    tail = (1 - level) / 2
    lo = np.sqrt(df * s2 / ss.chi2.ppf(1 - tail, df))
    hi = np.sqrt(df * s2 / ss.chi2.ppf(tail, df))
    return [num(lo), num(hi)]


def std_bounds(s: np.ndarray, df: np.ndarray | int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised chi-square interval of a std from its sample value(s) and degrees of freedom."""
    tail = (1 - level) / 2
    s, df = np.asarray(s, float), np.asarray(df, float)
    return s * np.sqrt(df / ss.chi2.ppf(1 - tail, df)), s * np.sqrt(df / ss.chi2.ppf(tail, df))


def adjusted_ci(diff: float | None, se: float | None, df: float | None,
                level: float = 0.95) -> list[float | None] | None:
    """t interval diff ± t(1−(1−level)/2, df)·se: the interval of a t test at any (e.g. Bonferroni) level.

    The verdict prints the interval at the level its Holm-controlled test faces (1 − α/m), so an interval that
    excludes 0 never stands beside "not distinguishable from seed noise".
    """
    if diff is None or se is None or df is None or not se > 0 or not df > 0:
        return None
    half = float(ss.t.ppf(1 - (1 - level) / 2, df)) * se
    return [num(diff - half), num(diff + half)]
