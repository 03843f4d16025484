"""The verdict: a few plain sentences with numbers, most important first.

Order: what explains the spread; whether each toggle beats seed noise; whether determinism made
identically configured runs bit-identical and its time cost; how many runs a study needs;
how much predictions churn; how many runs failed.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.decomposition import RESIDUAL
from harness.analysis.levels import ALPHA, IDENTICAL_REPLICATES, fmt_p
from harness.report.effects import best_vs_worst, effect_text, mean_test, spread_test
from harness.report.seed_sentences import seed_component_sentences, seed_source_sentences

__all__ = ["best_vs_worst", "verdict", "verdict_claims"]


def _pp(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:+.{digits}f} pp"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def verdict_claims(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every test whose outcome a verdict sentence states: the family the report controls (Holm)."""
    claims: list[dict[str, Any]] = []
    for name, f in rep["factors"].items():
        if f.get("role", "treatment") == "treatment":
            for kind, chosen in (("mean", mean_test(f)), ("spread", spread_test(f))):
                if chosen is not None:
                    claims.append({"factor": name, "kind": kind, "test": chosen[0], "p": chosen[1]})
        for lv in (f.get("seed_spread") or {}).get("levels", []):
            if lv["p_vs_fixed"] is not None:
                claims.append({"factor": name, "level": lv["level"], "kind": "seed_source",
                               "test": "F test of variances vs all-fixed", "p": lv["p_vs_fixed"]})
        if (f.get("failures") or {}).get("fisher_p") is not None:
            claims.append({"factor": name, "kind": "failures", "test": f["failures"]["method"],
                           "p": f["failures"]["fisher_p"]})
    for c in (rep.get("cross_validation") or {}).get("comparisons", []):
        if c["p"] is not None:
            claims.append({"factor": "cross-validation", "level": f"{c['a']} vs {c['b']}", "kind": "cv",
                           "test": c["method"], "p": c["p"]})
    return claims


def _claim(rep: dict[str, Any], factor: str, kind: str, level: str | None = None) -> dict[str, Any] | None:
    for c in rep.get("multiplicity", {}).get("claims", []):
        if c["factor"] == factor and c["kind"] == kind and c.get("level") == level:
            return c
    return None


def _bw(rep: dict[str, Any], f: dict[str, Any]) -> dict[str, Any] | None:
    """best_vs_worst with its interval at the level of the verdict's Holm family."""
    fam = rep.get("multiplicity") or {}
    return best_vs_worst(f, fam.get("size") or 1, fam.get("alpha", ALPHA))


def _spread_sentences(rep: dict[str, Any], alpha: float) -> list[str]:
    """Where the spread itself differs by level (Bartlett, Holm over the family), name the extremes."""
    out = []
    for name, f in rep["factors"].items():
        claim = _claim(rep, name, "spread")
        within = ((f.get("model_tests") or {}).get("spread") or {}).get("std")
        stds = ({lv: s for lv, s in within.items() if s is not None} if within and "within" in (claim or {}).get(
            "test", "") else {r["level"]: r["std"] for r in f["levels"] if r.get("std") is not None and r["n"] >= 2})
        if claim is None or not claim["reject"] or len(stds) < 2:
            continue
        ranked = sorted(stds, key=lambda lv: stds[lv])
        where = " (pooled within cells)" if within and "within" in claim["test"] else ""
        out.append(f"The spread differs across {name} levels ({claim['test']}, Holm {fmt_p(claim['p_holm'])}): std"
                   f"{where} {100 * stds[ranked[-1]]:.2f} pp with {ranked[-1]} vs "
                   f"{100 * stds[ranked[0]]:.2f} pp with {ranked[0]}.")
    return out


def _model_sentences(rep: dict[str, Any]) -> list[str]:
    """How the treatments were tested when several vary, whether the cells are balanced, or why nothing was."""
    model = rep.get("design", {}).get("model")
    identical = [n for n, f in rep["factors"].items() if f["mean_tests"]["reason"] == IDENTICAL_REPLICATES
                 and "model_tests" not in f]
    out = []
    if identical:
        out.append(f"The replicates within every level of {', '.join(identical)} are identical: zero spread is not "
                   "seed noise to test against, so no mean or spread test is stated (without weights_hash, copies "
                   "of one training cannot be told from trainings).")
    if not model:
        return out
    if not model["testable"]:
        if model["reason"].startswith("not testable: the replicates"):
            out.append(f"The replicates within every cell of {' × '.join(model['factors'])} are identical: zero "
                       "spread is not seed noise to test against, so no mean or spread test is stated.")
        return out
    text = (f"Each treatment is tested within one model of {' × '.join(model['factors'])} (type-III F on marginal "
            "means; spreads pooled within cells), not pooled over the other factors")
    if not model["balanced"]:
        cells = ", ".join(f"{k} {v}" for k, v in model["cells"].items())
        text += (f"; the cells are unbalanced (runs per cell: {cells}), so each comparison rests on unequal cells "
                 "and weighs every cell equally")
    return out + [text + "."]


def _failure_sentences(rep: dict[str, Any]) -> list[str]:
    """Factors whose failure rates differ (Holm), with the counts; the others in one sentence."""
    out, calm = [], []
    for name, f in rep["factors"].items():
        fail = f.get("failures") or {}
        claim = _claim(rep, name, "failures")
        if not fail.get("n_failed") or claim is None:
            continue
        if claim["reject"]:
            rates = ", ".join(f"{lv['level']} {lv['failed']}/{lv['runs']}" for lv in fail["levels"])
            out.append(f"Failures differ by {name}: {rates} ({fail['method']}, Holm {fmt_p(claim['p_holm'])}).")
        else:
            calm.append(f"{name} (Holm {fmt_p(claim['p_holm'])})")
    if calm:
        out.append("Failure rates do not differ detectably by " + ", ".join(calm) + " (Fisher's exact test).")
    return out


def _lead(rep: dict[str, Any]) -> tuple[str, set[str]]:
    """The answer first: how much accuracy varies, and its causes by size (those beyond seed noise, Holm), or
    that none is, with the smallest effect the study could have seen. Returns (sentence, factors it named)."""
    acc = rep.get("accuracy") or {}
    spread = "Accuracy"
    if acc.get("std") is not None:
        spread = (f"Accuracy varies with std {100 * acc['std']:.2f} pp over {acc['n']} finished runs "
                  f"({_pct(acc['min'], 2)}–{_pct(acc['max'], 2)})")
    causes = []
    for name, f in rep["factors"].items():
        claim = _claim(rep, name, "mean")
        bw = _bw(rep, f) if claim and claim["reject"] else None
        if bw is not None:
            causes.append((abs(bw["diff"]), name, bw, claim))
    causes.sort(key=lambda c: -c[0])
    if causes:
        parts = [f"{name}, {effect_text(bw)}, Holm {fmt_p(claim['p_holm'])}" for _, name, bw, claim in causes]
        text = f"{spread}; its largest cause is {parts[0]}"
        if len(parts) > 1:
            text += "; then " + "; ".join(parts[1:])
        return text + ".", {name for _, name, _, _ in causes}
    tested = [name for name in rep["factors"] if _claim(rep, name, "mean")]
    if not tested:
        return (f"{spread}." if acc.get("std") is not None else "Accuracy: no finished runs to compare."), set()
    need = rep.get("seeds_needed") or {}
    floor = (f": no effect larger than {need['mde_pp']:.2f} pp at {need['power']:.0%} power, the smallest this "
             "study could have seen" if need.get("mde_pp") is not None else "")
    return (f"{spread}; no factor ({', '.join(tested)}) changes mean accuracy beyond seed noise{floor}.", set())


def verdict(rep: dict[str, Any]) -> list[str]:
    """Sentences for the top of report.md, built only from the numbers in the report dict."""
    out: list[str] = []
    fam = rep.get("multiplicity") or {"alpha": ALPHA, "size": 0}
    alpha = fam["alpha"]
    if rep["n_finished"] == 0:
        return [f"No finished runs ({rep['n_failed']} failed or killed): nothing to compare."]
    dec = rep["decomposition"]
    factors = rep["factors"]
    envs = rep.get("environments") or {}
    if len(envs) > 1:  # a resumed study on upgraded libraries, or workers on other machines: say it first
        shown = "; ".join(f"{label}: {n} runs" for label, n in envs.items())
        out.append(f"Runs from {len(envs)} environments ({shown}): a difference between levels may be the "
                   "environment's wherever the levels ran in different ones; compare within one (filter the runs "
                   "table by its `environment` column) or rerun in one.")
    copies = rep.get("design", {}).get("copies_dropped", 0)
    if copies:
        out.append(f"{copies} bit-identical copies (same weights_hash, whatever their config_key) count once: "
                   "statistics use distinct trainings only.")
    design = rep.get("design", {})
    if design.get("kind") == "one_at_a_time" and design.get("kind_inferred"):
        out.append("No `design` column: every run is the base point or moves one factor from it, so each factor is "
                   "compared one at a time, on the runs where the others are at their base level.")
    lead, named = _lead(rep)
    out.append(lead)
    if dec["testable"]:
        terms = [t for t in dec["terms"] if t["term"] != RESIDUAL]
        resid = next(t for t in dec["terms"] if t["term"] == RESIDUAL)
        top = max(terms, key=lambda t: t.get("omega_squared") or 0)  # ω²: unbiased, not favouring many levels
        ci = top["partial_share_ci"]
        ci_text = (f" (partial share {_pct(top['partial_share'])}, 95% CI {_pct(ci[0])}–{_pct(ci[1])})"
                   if ci and None not in ci else "")
        if (top.get("omega_squared") or 0) > 0:  # a 0% "largest share" is no finding (the lead said so)
            bw = _bw(rep, factors[top["term"]]) if top["term"] in factors else None
            out.append(f"{top['term']} explains the most accuracy variance: ω² {_pct(top['omega_squared'])}, "
                       f"{_pct(top['share'])} of the total sum of squares{ci_text}"
                       + (f"; {effect_text(bw)}." if bw else "."))
        sd = f", residual std {100 * dec['residual_std']:.2f} pp" if dec["residual_std"] is not None else ""
        out.append(f"{RESIDUAL[0].upper() + RESIDUAL[1:]} accounts for {_pct(resid['share'])} of the variance{sd}.")
    else:
        out.append(f"Variance decomposition: {dec['reason']}.")
    out += _model_sentences(rep)
    for name, f in factors.items():
        claim = _claim(rep, name, "mean")
        if claim is None or len(f["levels"]) < 2 or name in named:
            continue
        bw = _bw(rep, f)
        if bw is None:
            continue
        out.append(f"{name}: {effect_text(bw)} — {'beyond' if claim['reject'] else 'not distinguishable from'} "
                   f"seed noise ({claim['test']}, Holm {fmt_p(claim['p_holm'])}, α={alpha}).")
    out += seed_source_sentences(rep, _claim)
    out += seed_component_sentences(rep)
    out += _spread_sentences(rep, alpha)
    out += _failure_sentences(rep)
    if fam["size"]:
        out.append(f"Multiplicity: the {fam['size']} tests behind these sentences (means, spreads, seed sources, "
                   f"failures) are Holm-adjusted together; family-wise error rate ≤ α={alpha}.")
    out += _determinism_sentences(rep)
    out += _power_sentences(rep["seeds_needed"])
    fl = rep["flips"]
    if fl.get("mean_churn") is not None:
        out.append(f"Between two runs {_pct(fl['mean_churn'], 2)} of validation predictions differ on average "
                   f"(max {_pct(fl['max_churn'], 2)}); {_pct(fl['frac_ever_flipped'], 2)} of {fl['n_ids']} examples "
                   f"flipped at least once; majority vote of {fl.get('majority_vote_runs', fl['n_runs'])} runs of one "
                   f"configuration scores "
                   f"{_pct(fl['majority_vote_accuracy'], 2)} vs {_pct(fl['mean_run_accuracy'], 2)} for a single run.")
    out += _cv_sentences(rep.get("cross_validation"), rep)
    if rep["n_failed"]:
        out.append(f"{rep['n_failed']} of {rep['n_runs']} runs did not finish and were excluded.")
    return out


def _power_sentences(need: dict[str, Any]) -> list[str]:
    """The smallest difference this study could see, and the runs per level a given difference needs."""
    if need.get("mde_pp") is None or need.get("sigma_pp") is None:
        return []
    noise = ("paired-difference std" if need.get("design") == "paired"
             else "seed noise std of a single run (seed effects included)")
    unit = "seed blocks" if need.get("design") == "paired" else "runs per level"
    tests = need.get("tests", 1)
    at = f"α={need['alpha']}" + (f" over the {tests} tests (α/{tests} each, as Holm's first step)" if tests > 1 else "")
    s = (f"With {noise} {need['sigma_pp']:.2f} pp and {need['n_per_group']} {unit}, the smallest "
         f"difference detectable at {at}, power {need['power']} is {need['mde_pp']:.2f} pp")
    if need.get("n_needed") and need.get("delta_pp"):
        df = f" from {need['sigma_df']:.3g} df" if need.get("sigma_df") else ""
        s += (f"; detecting {need['delta_pp']:g} pp needs {need['n_needed']} {unit} (t power averaged over the "
              f"uncertainty of that std{df})")
    return [s + "."]


def _cv_sentences(cv: dict[str, Any] | None, rep: dict[str, Any] | None = None) -> list[str]:
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
            text += (f"; {ens.get('rule', 'majority vote')} of the {ens['members']} seeds: {_pct(ens['accuracy'], 2)} "
                     f"({ens['images']} images)")
        out.append(text + ".")
    for c in (cv or {}).get("comparisons", []):
        claim = _claim(rep or {}, "cross-validation", "cv", f"{c['a']} vs {c['b']}")
        if claim is None or c["ci"] is None:
            continue
        out.append(f"Cross-validated {c['a']} vs {c['b']}: {_pp(c['diff'])} ({c['method']}, 95% CI "
                   f"{100 * c['ci'][0]:+.2f} to {100 * c['ci'][1]:+.2f} pp) — "
                   f"{'beyond' if claim['reject'] else 'not distinguishable from'} seed noise "
                   f"(Holm {fmt_p(claim['p_holm'])}).")
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
        ci = (c.get("ratio_ci") or {}).get(slow)
        if slow == c["fastest"] or ci is None:
            continue
        times = (f"mean {c['mean_wall_time_s'][slow]:.1f} s vs {c['mean_wall_time_s'][c['fastest']]:.1f} s, "
                 f"95% CI of the ratio {ci[0]:.2f}–{ci[1]:.2f}")
        if ci[0] > 1:
            out.append(f"{f}={slow} took {c['ratio_to_fastest'][slow]:.2f}× the wall time of {f}={c['fastest']} "
                       f"({times}; timings are as loaded as the machine was).")
        else:
            out.append(f"Wall time does not differ measurably by {f} ({times}).")
    return out
