"""Multiplicity control: Holm (statsmodels multipletests) over a list of p-values, None entries skipped.

The report controls the family of claims its verdict draws from (see report.verdict): every mean, spread,
seed-source and failure test whose outcome a verdict sentence states, at the `alpha` the user chose.
"""

from __future__ import annotations

import gc
from typing import Any

from harness.analysis.common import num


def holm(pvalues: list[float | None], alpha: float = 0.05) -> list[float | None]:
    """Holm-adjusted p-values; None entries stay None and are not counted in the family.

    multipletests runs gc.collect() on every call (0.2 s with a large heap); freezing the heap first
    makes that collection cheap without changing what it computes.
    """
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        gc.freeze()
        try:
            adj = multipletests([pvalues[i] for i in idx], alpha=alpha, method="holm")[1]
        finally:
            gc.unfreeze()
        for i, p in zip(idx, adj, strict=True):
            out[i] = num(p)
    return out


def control_family(claims: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Holm over every claim with a p-value; each claim gets `p_holm` and `reject` (p_holm < alpha)."""
    adjusted = holm([c.get("p") for c in claims], alpha)
    for claim, p in zip(claims, adjusted, strict=True):
        claim["p_holm"] = p
        claim["reject"] = p is not None and p < alpha
    tested = sum(1 for c in claims if c.get("p") is not None)
    return {"method": "Holm (family-wise error rate)", "alpha": alpha, "size": tested, "claims": claims}
