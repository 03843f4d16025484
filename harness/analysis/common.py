"""Small helpers shared by the statistics: JSON-safe numbers, p-value text, warnings silenced."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


@contextmanager
def quiet() -> Iterator[None]:
    """Silence scipy/statsmodels/numpy warnings: degenerate cases are reported as notes instead."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def num(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None become None."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_p(p: float | None, name: str = "p") -> str:
    """p-value text: 'p n/a' when untestable, 'p<0.0001' when tiny, else 'p=0.0123'."""
    if p is None:
        return f"{name} n/a"
    return f"{name}<0.0001" if p < 1e-4 else f"{name}={p:.3g}"
