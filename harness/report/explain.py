"""`harness explain` written up: the answer first (largest cause, its size and interval), then the table of every
difference; explain.md for people, explain.json for programs (docs/runs-table.md describes its keys)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.files import write_atomic


def _pp(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f} pp"


def _acc(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def _ci(ci: list[float] | None, level: float) -> str:
    return "no interval (fewer than 2 seed blocks)" if ci is None else (
        f"{100 * level:.3g}% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f} pp")


def _value(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def assemble(a: Any, b: Any, diffs: list[Any], attribution: dict[str, Any] | None, **context: Any) -> dict[str, Any]:
    """The explanation as one dict: what explain.json holds, with the verdict sentences last.

    context: identical, observed_gap (fraction or None), block_sources, noise_from_store, reproduction,
    exact_rerun, divergence_note, points ({name: {mean, n}}), runs_trained, repeats, study.
    """
    from harness.analysis.attribution import gap_percentile

    attribution = attribution or {}
    noise = attribution.get("noise")
    config_gap = attribution.get("config_gap")
    observed = context.get("observed_gap")
    gap = observed if observed is not None else (config_gap or {}).get("effect")
    where = gap_percentile(gap, noise) if gap is not None else {"percentile": None, "p_as_large": None}
    n_claims = len(attribution.get("effects", {})) + (1 if attribution.get("interaction") else 0)
    interaction = attribution.get("interaction")
    ex = {
        "a": _side(a), "b": _side(b), "identical": context.get("identical", False), "observed_gap": observed,
        "gap_pp": _in_pp(gap), "seed_noise_pp": _in_pp(noise["std"]) if noise else None,
        "gap_percentile": where["percentile"], "gap_p_as_large": where["p_as_large"],
        "differences": differences_json(diffs, attribution),
        "interaction_pp": _in_pp(interaction["effect"]) if interaction else None,
        "interaction_ci_pp": _ci_pp(interaction["ci"]) if interaction else None,
        **_traced(context.get("trace")), "level": attribution.get("level", 0.95),
        "adjustment": f", Bonferroni over {n_claims}" if n_claims > 1 else "",
        "noise": noise, "config_gap": config_gap, "interaction": interaction, "gap_vs_noise": where,
        **{key: context.get(key) for key in ("block_sources", "noise_from_store", "reproduction", "exact_rerun",
                                              "divergence_note", "points", "runs_trained", "repeats", "study")},
    }
    ex["block_sources"] = ex["block_sources"] or []
    ex["verdict"] = verdict(ex)
    return ex


DIVERGENCE_KEYS = ("step", "kind", "where", "op", "max_abs_diff", "cause", "variables", "variable")


def _traced(traced: dict[str, Any] | None) -> dict[str, Any]:
    """explain.json's `divergence` ({step, kind, where, op, max_abs_diff, cause}; None when the replays agree or
    none ran) and `trace` (what was replayed: steps, seconds, each side's backend and determinism)."""
    if traced is None:
        return {"divergence": None, "trace": None}
    found = traced["divergence"]
    divergence = None if found is None else {key: found[key] for key in DIVERGENCE_KEYS if key in found}
    if found is not None and "from_a_weights" in found:  # what the steps do from equal (A's) initial weights
        then = found["from_a_weights"]
        divergence["from_a_weights"] = then if then is None or "identical_through" in then else {
            key: then[key] for key in DIVERGENCE_KEYS if key in then}
    return {"divergence": divergence,
            "trace": {key: traced.get(key) for key in ("steps", "seconds", "sides", "probe_reproduces")}}


def _side(record: Any) -> dict[str, Any]:
    return {"source": record.source, "accuracy": record.accuracy, "weights_hash": record.weights_hash,
            "study": record.study, "data_fingerprint": record.data_fingerprint}


def differences_json(diffs: list[Any], attribution: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every difference with its effect where one was measured, largest |effect| first (unmeasured ones last).

    The seeds that differ are one entry: their joint share of the observed gap is what one measures."""
    effects = (attribution or {}).get("effects", {})
    rows, seeds = [], [d for d in diffs if d.kind == "seed"]
    for d in diffs:
        if d.kind == "seed":
            continue
        measured = effects.get(d.key) or {}
        rows.append({"key": d.key, "kind": d.kind, "a": d.a, "b": d.b, "effect_pp": _in_pp(measured.get("effect")),
                     "ci_pp": _ci_pp(measured.get("ci")), "varied": d.varied, "why_not_varied": d.why_not or None})
    if seeds:
        residual = (attribution or {}).get("residual") or {}
        rows.append({"key": "+".join(d.key for d in seeds), "kind": "seed",
                     "a": {d.key: d.a for d in seeds} if len(seeds) > 1 else seeds[0].a,
                     "b": {d.key: d.b for d in seeds} if len(seeds) > 1 else seeds[0].b,
                     "effect_pp": _in_pp(residual.get("effect")), "ci_pp": _ci_pp(residual.get("ci")),
                     "varied": False, "why_not_varied": "seeds are the noise: their share is the gap the configs "
                     "do not explain", "gap_percentile": residual.get("percentile")})
    return sorted(rows, key=lambda r: -abs(r["effect_pp"]) if r["effect_pp"] is not None else math.inf)


def _in_pp(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(100 * x, 4)


def _ci_pp(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [round(100 * c, 4) for c in ci]


def verdict(ex: dict[str, Any]) -> list[str]:
    """The sentences, in the order a user asks: how big is the gap, what caused it, is it more than noise."""
    a, b = ex["a"], ex["b"]
    if ex["identical"]:
        return [f"A and B are the same training: identical weights (sha256 {a['weights_hash'][:12]}), accuracy "
                f"{_acc(a['accuracy'])}. Nothing to explain.", *_trace_sentences(ex)]
    out = []
    level = ex["level"]
    if ex["observed_gap"] is not None:
        out.append(f"B − A = {_pp(ex['observed_gap'])} (A {_acc(a['accuracy'])}, B {_acc(b['accuracy'])}).")
    elif ex["config_gap"] is not None:
        out.append(f"B's config − A's config = {_pp(ex['config_gap']['effect'])} here "
                   f"({_ci(ex['config_gap']['ci'], level)}, {ex['config_gap']['n_blocks']} seed blocks).")
    for row in [r for r in ex["differences"] if r["effect_pp"] is not None]:
        out.append(_cause_sentence(row, ex))
    if ex.get("interaction"):
        inter = ex["interaction"]
        out.append(f"Together the differences do {_pp(inter['effect'])} beyond the sum of their single effects "
                   f"(interaction, {_ci(inter['ci'], level)}).")
    noise = ex["noise"]
    if noise is not None:
        gap = ex["observed_gap"] if ex["observed_gap"] is not None else (ex["config_gap"] or {}).get("effect")
        where = ex["gap_vs_noise"]
        tail = ""
        if gap is not None and where["percentile"] is not None:
            tail = (f"; a gap of {_pp(gap).lstrip('+')} sits at percentile {where['percentile']:.0f} of the "
                    f"differences between two such runs ({where['p_as_large']:.0%} of pairs differ at least as much)")
        out.append(f"Seed noise: one run's accuracy varies with std {100 * noise['std']:.2f} pp "
                   f"({noise['n']} runs, {noise['df']} df, {', '.join(ex['block_sources']) or 'no'} seeds drawn "
                   f"afresh{', from the store' if ex['noise_from_store'] else ''}){tail}.")
    fixed = [r for r in ex["differences"] if not r["varied"] and r["kind"] != "seed"]
    if fixed:
        shown = "; ".join(f"{r['key']} ({_value(r['a'])} vs {_value(r['b'])})" for r in fixed[:4])
        more = f" and {len(fixed) - 4} more" if len(fixed) > 4 else ""
        out.append(f"Not varied here: {shown}{more}: {fixed[0]['why_not_varied']}.")
    out += _reproduction_sentences(ex)
    out += _trace_sentences(ex)
    if ex["divergence_note"]:
        out.append(ex["divergence_note"])
    return out


def _trace_sentences(ex: dict[str, Any]) -> list[str]:
    from harness.analysis.divergence import summary

    if ex.get("trace") is None:
        return []
    return [summary(ex["divergence"], ex["trace"]["steps"])]


def _cause_sentence(row: dict[str, Any], ex: dict[str, Any]) -> str:
    ci = row["ci_pp"]
    if row["kind"] == "seed":
        pct = row.get("gap_percentile")
        judged = ("within seed noise" if pct is not None and pct < 95 else
                  "larger than seed noise usually makes" if pct is not None else "not comparable with seed noise")
        where = f" (percentile {pct:.0f} of the differences between two seeds)" if pct is not None else ""
        if ci is None:
            return (f"A and B differ only in their seeds ({row['key']}) here: the gap of {row['effect_pp']:+.2f} pp "
                    f"is {judged}{where}.")
        return (f"The seeds ({row['key']}) account for {row['effect_pp']:+.2f} pp of the gap, the part the config "
                f"differences do not explain ({_ci([c / 100 for c in ci], ex['level'])}): {judged}{where}.")
    beyond = ci is not None and (ci[0] > 0 or ci[1] < 0)
    judged = "beyond seed noise" if beyond else "not distinguishable from seed noise"
    return (f"{row['key']} ({_value(row['a'])} → {_value(row['b'])}): {row['effect_pp']:+.2f} pp "
            f"({_ci([c / 100 for c in ci] if ci else None, ex['level'])}{ex['adjustment']}): {judged}.")


def _reproduction_sentences(ex: dict[str, Any]) -> list[str]:
    out = []
    rep = ex.get("reproduction")
    if rep and rep.get("interval"):
        lo, hi = rep["interval"]
        out.append(f"Here A's configuration gives {_acc(rep['mean'])} on average (n={rep['n']}); A's "
                   f"{_acc(rep['observed'])} is {'within' if rep['within'] else 'outside'} the 95% prediction "
                   f"interval of one more run ({_acc(max(lo, 0.0))}–{_acc(min(hi, 1.0))}).")
    exact = ex.get("exact_rerun")
    if exact:
        same = [side for side in ("A", "B") if exact["weights_hash"] == ex[side.lower()]["weights_hash"]]
        who = (f"weights identical to {' and '.join(same)}'s" if same else "weights identical to neither A's nor B's")
        out.append(f"A's exact config, seeds included, retrained here: {who}, accuracy {_acc(exact['accuracy'])}.")
    return out


def table_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| difference | kind | A | B | effect on accuracy | interval | varied |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        effect = "" if r["effect_pp"] is None else f"{r['effect_pp']:+.2f} pp"
        ci = "" if r["ci_pp"] is None else f"{r['ci_pp'][0]:+.2f} to {r['ci_pp'][1]:+.2f}"
        lines.append(f"| {r['key']} | {r['kind']} | {_value(r['a'])} | {_value(r['b'])} | {effect} | {ci} | "
                     f"{'yes' if r['varied'] else 'no: ' + (r['why_not_varied'] or '')} |")
    return lines


def divergence_markdown(ex: dict[str, Any]) -> list[str]:
    """The trace's finding as a table: step, kind, layer, op, largest difference, cause; what was replayed."""
    trace, found = ex["trace"], ex["divergence"]
    backends = " vs ".join(f"{label}: {side.get('backend')} on {side.get('device')}"
                           for label, side in (trace.get("sides") or {}).items())
    lines = [f"Both runs replayed in fresh processes ({backends}), {_steps(trace['steps'])} compared in "
             f"{trace['seconds']} s."]
    if found is None:
        return [*lines, "", "No step parts them: identical weights after every step."]
    size = "n/a" if found.get("max_abs_diff") is None else f"{found['max_abs_diff']:.3g}"
    lines += ["", "| step | kind | where | op | max abs diff | likely cause |", "|---|---|---|---|---|---|",
              f"| {found['step']} | {found['kind']} | {found['where']} | {found['op']} | {size} | {found['cause']} |"]
    then = found.get("from_a_weights")
    if then and "step" in then:
        size = "n/a" if then.get("max_abs_diff") is None else f"{then['max_abs_diff']:.3g}"
        lines.append(f"| {then['step']} (from A's initial weights) | {then['kind']} | {then['where']} | {then['op']} "
                     f"| {size} | {then['cause']} |")
    elif then:
        lines += ["", f"From A's initial weights in both: identical through {_steps(then['identical_through'])}."]
    if found.get("variables"):
        lines += ["", f"Weights that differ after the build: {', '.join(found['variables'])}."]
    return lines


def _steps(count: int) -> str:
    return f"{count} step{'' if count == 1 else 's'}"


def write(ex: dict[str, Any], out_dir: Path) -> list[Path]:
    """explain.md and explain.json in out_dir, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# Why do {ex['a']['source']} (A) and {ex['b']['source']} (B) differ?", "", *ex["verdict"], ""]
    if ex["differences"]:
        md += ["## Every difference", "", *table_markdown(ex["differences"]), ""]
    if ex.get("trace"):
        md += ["## Where they part", "", *divergence_markdown(ex), ""]
    if ex.get("points"):
        md += ["## What was trained", "", f"{ex['runs_trained']} trainings: the configurations below over "
               f"{ex['repeats']} seed blocks (study `{ex['study']}` in the MLflow store).", "",
               "| configuration | mean accuracy | runs |", "|---|---|---|"]
        md += [f"| {name} | {_acc(p['mean'])} | {p['n']} |" for name, p in ex["points"].items()]
    md.append("")
    paths = [out_dir / "explain.md", out_dir / "explain.json"]
    write_atomic(paths[0], "\n".join(md))
    public = {k: v for k, v in ex.items() if k not in ("noise", "config_gap", "interaction", "gap_vs_noise")}
    write_atomic(paths[1], json.dumps(public, indent=1, default=str))
    return paths
