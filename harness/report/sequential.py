"""Sequential replication in words: how many seeds each level used and why the study stopped (or must go on).

Built only from `report.json["sequential"]` (harness.analysis.sequential.decide), so the verdict, report.md and
the runner's log say the same thing.
"""

from __future__ import annotations

from typing import Any

WHY = {"effect": "its interval excludes 0", "no_effect": "its interval lies inside ±{res:g} pp"}


def _interval(c: dict[str, Any], level: float) -> str:
    lo, hi = c["ci_pp"] if c["ci_pp"] else (None, None)
    if lo is None or hi is None:
        return "interval unbounded so far"
    return f"{level:.1%} anytime interval {lo:+.2f} to {hi:+.2f} pp"


def comparison_text(c: dict[str, Any], seq: dict[str, Any]) -> str:
    """One comparison: its verdict, difference, interval, seeds, and why it is settled or what it needs."""
    res = seq["resolution_pp"]
    head = f"{c['factor']} {c['a']} vs {c['b']}"
    diff = f"{c['diff_pp']:+.2f} pp" if c["diff_pp"] is not None else "n/a"
    seeds = f"{c['n_a']} and {c['n_b']} distinct runs"
    body = f"{diff} ({_interval(c, seq['level_each'])}; {seeds})"
    if c["state"] == "effect":
        return f"{head}: an effect, {body}: settled, {WHY['effect']}"
    if c["state"] == "no_effect":
        return f"{head}: no effect larger than {res:g} pp, {body}: settled, {WHY['no_effect'].format(res=res)}"
    if c["more_seeds"]:
        return f"{head}: open, {body}: about {c['more_seeds']} more seed(s) per level would settle it"
    return f"{head}: open at the maximum of {seq['max_repeats']} seeds, {body}"


def seeds_text(seq: dict[str, Any]) -> str:
    """Seeds (finished trainings) per level, grouped by factor."""
    by: dict[str, list[str]] = {}
    for lv in seq["levels"]:
        by.setdefault(lv["factor"], []).append(f"{lv['level']} {lv['seeds']}")
    return "; ".join(f"{factor}: {', '.join(parts)}" for factor, parts in by.items())


def sequential_sentences(seq: dict[str, Any] | None) -> list[str]:
    """The verdict's sentences for a sequential decision: the stop and its reason, then each comparison."""
    if not seq:
        return []
    comps = seq["comparisons"]
    if not comps:
        return [f"Sequential replication (resolution {seq['resolution_pp']:g} pp): no treatment with two levels to "
                "compare."]
    open_ = [c for c in comps if c["state"] == "open"]
    if seq["state"] == "settled":
        why = f"every comparison is settled ({len(comps)} of {len(comps)})"
    elif seq["state"] == "max_reached":
        why = (f"stopped at the maximum of {seq['max_repeats']} seeds with {len(open_)} of {len(comps)} "
               "comparison(s) still open")
    else:
        need = max(c["more_seeds"] for c in open_)
        why = f"{len(open_)} of {len(comps)} comparison(s) open: up to {need} more seed(s) per level"
    lead = (f"Sequential replication at resolution {seq['resolution_pp']:g} pp ({seq['method']}, α={seq['alpha']}): "
            f"{why}. Seeds per level: {seeds_text(seq)}.")
    return [lead] + [comparison_text(c, seq) + "." for c in comps]


def markdown_section(seq: dict[str, Any] | None) -> list[str]:
    """report.md's table of the sequential decision (empty when the report was not asked for one)."""
    if not seq:
        return []
    out = ["## Sequential decision", "", f"Resolution {seq['resolution_pp']:g} pp, max {seq['max_repeats']} seeds, "
           f"{seq['method']}; state **{seq['state']}**. See docs/methods.md.", "",
           "| factor | a | b | state | diff (pp) | interval (pp) | runs a / b | more seeds | method |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in seq["comparisons"]:
        ci = "–" if not c["ci_pp"] or None in c["ci_pp"] else f"{c['ci_pp'][0]:+.2f} to {c['ci_pp'][1]:+.2f}"
        diff = "–" if c["diff_pp"] is None else f"{c['diff_pp']:+.2f}"
        out.append(f"| {c['factor']} | {c['a']} | {c['b']} | {c['state']} | {diff} | {ci} | {c['n_a']} / {c['n_b']} "
                   f"| {c['more_seeds']} | {c['method']} |")
    return out + [""]
