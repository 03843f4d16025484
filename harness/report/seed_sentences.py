"""Verdict sentences on seed sources: how much each one spreads accuracy, and whether they can be told apart.

Variance studies of CNNs (Summers & Dinneen 2021; Jordan 2024) find that every source of randomness gives about
the same spread, because training is chaotic: a ranking of point estimates would mostly rank noise. When the
sources' 95% intervals overlap, the verdict says they are indistinguishable in size and does not rank them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.analysis.levels import fmt_p


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} pp"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def overlap(intervals: list[list[float | None]]) -> bool:
    """True when every pair of intervals overlaps (no source is shown larger than another)."""
    whole = [iv for iv in intervals if iv and None not in iv]
    return len(whole) >= 2 and all(a[0] <= b[1] and b[0] <= a[1] for a in whole for b in whole)


def _size_tail(names: list[str], intervals: list[list[float | None]], what: str) -> str:
    if len(names) < 2:
        return ""
    if overlap(intervals):
        return (f" Their {what} intervals overlap: the sources are indistinguishable in size, as variance studies "
                "of CNNs find (every source of randomness spreads accuracy about equally).")
    return ""


def seed_source_sentences(rep: dict[str, Any], claim: Callable[..., dict[str, Any] | None]) -> list[str]:
    """Per seed-source factor of redrawn sets: each level's std with its χ² CI, against the all-fixed level."""
    out = []
    for name, f in rep["factors"].items():
        spread = f.get("seed_spread")
        if not spread:
            continue
        parts, names, cis = [], [], []
        for lv in spread["levels"]:
            if lv["std"] is None or lv["level"] == spread["fixed_level"]:
                continue
            ci = f" (95% CI {_pp(lv['std_ci'][0])}–{_pp(lv['std_ci'][1])})" if lv["std_ci"] else ""
            c = claim(rep, name, "seed_source", lv["level"])
            vs = f", vs all-fixed Holm {fmt_p(c['p_holm'])}" if c else ""
            parts.append(f"{lv['level']} {_pp(lv['std'])}{ci}{vs}")
            names.append(lv["level"])
            cis.append(lv["std_ci"])
        if parts:
            tail = f" {spread['note'][0].upper()}{spread['note'][1:]}." if spread["note"] else ""
            out.append(f"Seed sources ({name}): accuracy std per level " + "; ".join(parts) + "." + tail
                       + _size_tail(names, cis, "std"))
    return out


def seed_component_sentences(rep: dict[str, Any]) -> list[str]:
    """Seed-value factors (random effects, crossed ones fitted jointly): std component, its share of a single
    run's variance and that share's interval (Searle's F interval for one factor; the generalized confidence
    interval for crossed ones, which have no exact one)."""
    fitted = {k: v for k, v in (rep.get("random_effects") or {}).items() if v.get("testable")}
    if not fitted:
        return []
    parts, cis = [], []
    for name, re in fitted.items():
        ci = re["share_ci"]
        how = ", generalized CI" if re["crossed"] else ""
        interval = f" (95% CI {_pct(ci[0])}–{_pct(ci[1])}{how})" if ci else ""
        parts.append(f"{name} std {_pp(re['sd_factor'])}, {_pct(re['share'])} of a single run's variance{interval}")
        cis.append(ci)
    first = next(iter(fitted.values()))
    how = "fitted jointly, crossed" if first["crossed"] else "REML"
    text = (f"Seed components ({how}): " + "; ".join(parts)
            + f"; residual std {_pp(first['sd_residual'])}.")
    return [text + _size_tail(list(fitted), cis, "share")]
