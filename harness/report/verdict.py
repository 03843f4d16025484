"""The verdict: a few plain sentences with numbers, most important first.

Order: what explains the spread; whether each toggle beats seed noise; whether determinism made
identically configured runs bit-identical and its time cost; how many runs a study needs;
how much predictions churn; how many runs failed.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.decomposition import RESIDUAL
from harness.analysis.levels import ALPHA, fmt_p


def _pp(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:+.{digits}f} pp"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def best_vs_worst(factor: dict[str, Any]) -> dict[str, Any] | None:
    """Highest- vs lowest-mean level with the Welch difference CI and Holm p for that pair."""
    levels = [r for r in factor["levels"] if r["mean"] is not None]
    if len(levels) < 2:
        return None
    ranked = sorted(levels, key=lambda r: r["mean"])  # sorted, so equal means still name two levels
    best, worst = ranked[-1], ranked[0]
    out = {"best": best["level"], "worst": worst["level"], "diff": best["mean"] - worst["mean"],
           "ci": None, "p_holm": None}
    for pair in factor["mean_tests"].get("pairwise", []):
        if {pair["a"], pair["b"]} == {best["level"], worst["level"]}:
            sign = 1 if pair["a"] == best["level"] else -1
            if pair["ci"]:
                lo, hi = sorted(sign * c for c in pair["ci"])
                out["ci"] = [lo, hi]
            out["p_holm"] = pair.get("welch_p_holm")
    return out


def _effect_text(bw: dict[str, Any]) -> str:
    ci = f" (95% CI {100 * bw['ci'][0]:+.2f} to {100 * bw['ci'][1]:+.2f} pp" if bw["ci"] else " ("
    ci += f"{', ' if bw['ci'] else ''}Welch, Holm {fmt_p(bw['p_holm'])})"
    return f"{bw['best']} vs {bw['worst']}: {_pp(bw['diff'])}{ci}"


def _spread_sentences(factors: dict[str, Any]) -> list[str]:
    """Where the spread itself differs by level (Brown–Forsythe), name the noisiest and the calmest level."""
    out = []
    for name, f in factors.items():
        p = (f["variance_tests"].get("brown_forsythe") or {}).get("p")
        levels = [r for r in f["levels"] if r.get("std") is not None and r["n"] >= 2]
        if p is None or p >= ALPHA or len(levels) < 2:
            continue
        ranked = sorted(levels, key=lambda r: r["std"])
        out.append(f"The spread differs across {name} levels (Brown–Forsythe {fmt_p(p)}): std "
                   f"{100 * ranked[-1]['std']:.2f} pp with {ranked[-1]['level']} vs "
                   f"{100 * ranked[0]['std']:.2f} pp with {ranked[0]['level']}.")
    return out


def verdict(rep: dict[str, Any]) -> list[str]:
    """Sentences for the top of report.md, built only from the numbers in the report dict."""
    out: list[str] = []
    if rep["n_finished"] == 0:
        return [f"No finished runs ({rep['n_failed']} failed or killed): nothing to compare."]
    dec = rep["decomposition"]
    factors = rep["factors"]
    if dec["testable"]:
        terms = [t for t in dec["terms"] if t["term"] != RESIDUAL]
        resid = next(t for t in dec["terms"] if t["term"] == RESIDUAL)
        top = max(terms, key=lambda t: t["share"] or 0)
        ci = top["partial_share_ci"]
        ci_text = (f" (partial share {_pct(top['partial_share'])}, 95% CI {_pct(ci[0])}–{_pct(ci[1])})"
                   if ci and None not in ci else "")
        text = (f"{top['term']} explains the most accuracy variance: {_pct(top['share'])} of the total"
                f"{ci_text}, F-test {fmt_p(top['p'])}")
        bw = best_vs_worst(factors[top["term"]]) if top["term"] in factors else None
        out.append(text + (f"; {_effect_text(bw)}." if bw else "."))
        sd = f", residual std {100 * dec['residual_std']:.2f} pp" if dec["residual_std"] is not None else ""
        out.append(f"{RESIDUAL[0].upper() + RESIDUAL[1:]} accounts for {_pct(resid['share'])} of the variance{sd}.")
    else:
        out.append(f"Variance decomposition: {dec['reason']}.")
    for name, f in factors.items():
        if name.startswith("seeds.") or f["mean_tests"]["reason"] or len(f["levels"]) < 2:
            continue
        bw = best_vs_worst(f)
        if bw is None:
            continue
        beyond = bw["p_holm"] is not None and bw["p_holm"] < ALPHA
        out.append(f"{name}: {_effect_text(bw)} — {'beyond' if beyond else 'not distinguishable from'} "
                   f"seed noise at α={ALPHA}.")
    out += _spread_sentences(factors)
    out += _determinism_sentences(rep)
    need = rep["seeds_needed"]
    if need.get("mde_pp") is not None and need.get("sigma_pp") is not None:
        s = (f"With seed noise std {need['sigma_pp']:.2f} pp and {need['n_per_group']} runs per group, the smallest "
             f"difference detectable at α={need['alpha']}, power {need['power']} is {need['mde_pp']:.2f} pp")
        if need.get("n_needed") and need.get("delta_pp"):
            s += f"; detecting {need['delta_pp']:g} pp needs {need['n_needed']} runs per group"
        out.append(s + ".")
    fl = rep["flips"]
    if fl.get("mean_churn") is not None:
        out.append(f"Between two runs {_pct(fl['mean_churn'], 2)} of validation predictions differ on average "
                   f"(max {_pct(fl['max_churn'], 2)}); {_pct(fl['frac_ever_flipped'], 2)} of {fl['n_ids']} examples "
                   f"flipped at least once; majority vote of {fl['n_runs']} runs scores "
                   f"{_pct(fl['majority_vote_accuracy'], 2)} vs {_pct(fl['mean_run_accuracy'], 2)} for a single run.")
    out += _cv_sentences(rep.get("cross_validation"))
    if rep["n_failed"]:
        out.append(f"{rep['n_failed']} of {rep['n_runs']} runs did not finish and were excluded.")
    return out


def _cv_sentences(cv: dict[str, Any] | None) -> list[str]:
    """Cross-validated accuracy over seeds and of the seed ensemble, per setting of the other factors."""
    out = []
    for group in (cv or {}).get("groups", []):
        if group["mean"] is None:
            continue
        where = ", ".join(f"{k}={v}" for k, v in group["setting"].items())
        ci = f" (95% CI {_pct(group['ci'][0], 2)}–{_pct(group['ci'][1], 2)})" if group["ci"] else ""
        text = f"{cv['folds']}-fold cross-validated accuracy{' with ' + where if where else ''}: " \
               f"{_pct(group['mean'], 2)} over {group['n_seeds']} seeds{ci}"
        ens = group["ensemble"]
        if ens and ens["accuracy"] is not None:
            text += (f"; majority vote of the {ens['members']} seeds: {_pct(ens['accuracy'], 2)} "
                     f"({ens['images']} images)")
        out.append(text + ".")
    return out


def _determinism_sentences(rep: dict[str, Any]) -> list[str]:
    """Bit-identity per determinism level, and the wall-time ratio between levels."""
    ident, cost = rep["identical"], rep["identical"].get("cost", {})
    out = []
    if ident["n_groups"] == 0:
        out.append(f"Bit-identity not checked: {ident['reason']}.")
    elif ident["by_determinism"]:
        for f, levels in ident["by_determinism"].items():
            parts = [f"with {f}={lv}, {v['identical']}/{v['groups']} identically configured groups were "
                     f"bit-identical" for lv, v in levels.items()]
            out.append("; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ".")
    else:
        out.append(f"{ident['n_identical']}/{ident['n_groups']} identically configured groups were bit-identical.")
    for f, c in cost.items():
        slow = max(c["ratio_to_fastest"], key=lambda k: c["ratio_to_fastest"][k] or 0)
        if slow != c["fastest"]:
            out.append(f"{f}={slow} took {c['ratio_to_fastest'][slow]:.2f}× the wall time of {f}={c['fastest']} "
                       f"(mean {c['mean_wall_time_s'][slow]:.1f} s vs {c['mean_wall_time_s'][c['fastest']]:.1f} s).")
    return out
