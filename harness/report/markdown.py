"""Render the report dict as Markdown: Verdict first, then the evidence section by section."""

from __future__ import annotations

from typing import Any

from harness.analysis.levels import fmt_p


def _pct(x: float | None, d: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{d}f}"


def _ci(ci: list[float | None] | None, d: int = 2) -> str:
    return "–" if not ci or None in ci else f"[{100 * ci[0]:.{d}f}, {100 * ci[1]:.{d}f}]"


def _num(x: float | None, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _factor(name: str, f: dict[str, Any], plots: dict[str, str]) -> list[str]:
    out = [f"### {name}", ""]
    out += _table(["level", "n", "mean %", "std pp", "95% CI mean", "95% CI std", "min %", "max %", "note"],
                  [[r["level"], str(r["n"]), _pct(r["mean"]), _pct(r["std"]), _ci(r["mean_ci"]),
                    _ci(r["std_ci"]), _pct(r["min"]), _pct(r["max"]), r["note"]] for r in f["levels"]])
    v, m = f["variance_tests"], f["mean_tests"]
    out.append("")
    if v["testable"]:
        out.append(f"- Spread: Bartlett {fmt_p((v.get('bartlett') or {}).get('p'))}, "
                   f"Brown–Forsythe {fmt_p(v['brown_forsythe']['p'])}, Levene {fmt_p(v['levene']['p'])}, "
                   f"Fligner–Killeen {fmt_p(v['fligner']['p'])}")
    else:
        out.append(f"- Spread: {v['reason']}")
    out.append(f"- Role: {f.get('role', 'treatment')}")
    if m["testable"]:
        out.append(f"- Means: ANOVA {fmt_p(m['anova']['p'])}, Welch ANOVA {fmt_p(m['welch']['p'])}, "
                   f"Kruskal–Wallis {fmt_p(m['kruskal']['p'])}, η² = {_num(m['eta_squared'])}, "
                   f"ω² = {_num(m.get('omega_squared'))} (unadjusted p; the verdict's p are Holm over its family)")
    else:
        out.append(f"- Means: {m['reason']}")
    out += _paired(m.get("paired"))
    out += _model(f.get("model_tests"))
    out += _seed_spread(f.get("seed_spread"))
    out += _failures(f.get("failures"))
    if m["excluded_levels"]:
        out.append(f"- Excluded from tests (fewer than 3 runs): {', '.join(m['excluded_levels'])}")
    if m["pairwise"]:
        pooled = " (pooled over the other factors)" if f.get("model_tests") else ""
        out += ["", *_table([f"a − b{pooled}", "diff pp", "95% CI pp", "Welch p (Holm)", "Mann–Whitney p (Holm)",
                             "Cohen's d", "Cliff's δ"],
                            [[f"{p['a']} − {p['b']}", _pct(p["mean_diff"]), _ci(p["ci"]), _num(p.get("welch_p_holm")),
                              _num(p.get("mw_p_holm")), _num(p["cohens_d"]), _num(p["cliffs_delta"])]
                             for p in m["pairwise"]])]
    if f"factor:{name}" in plots:
        out += ["", f"![{name}]({plots[f'factor:{name}']})"]
    return out + [""]


def _paired(pr: dict[str, Any] | None) -> list[str]:
    if not pr:
        return []
    rm = pr["anova_rm"] or {}
    out = [f"- Paired by seed block ({pr['blocks']} complete blocks): repeated-measures ANOVA "
           f"{fmt_p(rm.get('p'))}, std of paired differences {_pct(pr['sd_diff'])} pp. {pr['note']}".rstrip(), ""]
    return out + _table(["a − b", "pairs", "diff pp", "95% CI pp", "paired t p", "p (Holm)"],
                        [[f"{r['a']} − {r['b']}", str(r["n_pairs"]), _pct(r["mean_diff"]), _ci(r["ci"]),
                          _num(r["p"]), _num(r["p_holm"])] for r in pr["pairwise"]]) + [""]


def _model(mt: dict[str, Any] | None) -> list[str]:
    """The factor tested within the multi-factor model (the verdict's test when several treatments vary)."""
    if not mt:
        return []
    if "p" not in mt:
        return [f"- Within the multi-factor model: {mt['reason']}", ""]
    spread = mt["spread"]
    out = [f"- Within the multi-factor model: type-III F = {_num(mt['F'])} ({mt['df_num']:g}, {mt['df_denom']:g} df), "
           f"{fmt_p(mt['p'])}; Bartlett within cells {fmt_p(spread['p'])}; runs per level "
           + ", ".join(f"{k} {v}" for k, v in mt["runs_per_level"].items()) + " (unadjusted p)", ""]
    return out + _table(["a − b (marginal means)", "diff pp", "95% CI pp (unadjusted)", "t p"],
                        [[f"{r['a']} − {r['b']}", _pct(r["mean_diff"]), _ci(r["ci"]), _num(r["p"])]
                         for r in mt["pairs"]]) + [""]


def _seed_spread(sp: dict[str, Any] | None) -> list[str]:
    if not sp:
        return []
    out = [f"- Seed-source spread (all-fixed level: {sp['fixed_level'] or 'none found'}). {sp['note']}".rstrip(), ""]
    return out + _table(["level", "distinct runs", "std pp", "95% CI std pp (χ²)", "variance ratio vs fixed",
                         "F-test p vs fixed"],
                        [[r["level"], str(r["n"]), _pct(r["std"]), _ci(r["std_ci"]), _num(r["variance_ratio"]),
                          _num(r["p_vs_fixed"])] for r in sp["levels"]]) + [""]


def _failures(fl: dict[str, Any] | None) -> list[str]:
    if not fl or not fl.get("n_failed"):
        return []
    rates = ", ".join(f"{r['level']} {r['failed']}/{r['runs']}" for r in fl["levels"])
    return [f"- Failures: {rates}; {fl['method'] or 'not testable'} {fmt_p(fl['fisher_p'])}"]


def _multiplicity(fam: dict[str, Any] | None) -> list[str]:
    if not fam or not fam["claims"]:
        return []
    out = ["## Multiplicity", "", f"{fam['method']} over the {fam['size']} tests the verdict states, "
           f"α = {fam['alpha']}.", ""]
    return out + _table(["factor", "claim", "test", "p", "p (Holm)", "rejected"],
                        [[c["factor"] + (f" = {c['level']}" if c.get("level") else ""), c["kind"], c["test"],
                          _num(c["p"]), _num(c["p_holm"]), "yes" if c["reject"] else "no"]
                         for c in fam["claims"]]) + [""]


def _decomposition(dec: dict[str, Any], re: dict[str, Any]) -> list[str]:
    out = ["## Variance decomposition", ""]
    if not dec["testable"]:
        out.append(dec["reason"])
    else:
        out += [f"OLS `{dec['formula']}` (f0, f1, … = {', '.join(dec['factors'])}), type-II sums of squares; "
                "share = sum of squares / total; partial share = SS / (SS + residual SS) with a 95% CI "
                "for its population value (noncentral F).", ""]
        out += _table(["term", "df", "share %", "ω² %", "partial share %", "95% CI partial %", "F", "p"],
                      [[t["term"], _num(t["df"]), _pct(t["share"], 1), _pct(t.get("omega_squared"), 1),
                        _pct(t["partial_share"], 1), _ci(t["partial_share_ci"], 1), _num(t["F"]),
                        fmt_p(t["p"]) if t["F"] is not None else ""]
                       for t in dec["terms"]])
        if dec["note"]:
            out += ["", dec["note"]]
    for f, why in dec["excluded"].items():
        out.append(f"- {f}: left out ({why})")
    for f, r in re.items():
        if r["testable"] and r.get("crossed"):
            out.append(f"- Random effect {f} ({r['levels']} levels, {r['method']}): share of all seed variance "
                       f"{_pct(r['share'], 1)}%; vs residual only {_pct(r['partial_share'], 1)}% (95% CI "
                       f"{_ci(r['partial_share_ci'], 1)}%), sd {_pct(r['sd_factor'])} pp vs residual "
                       f"{_pct(r['sd_residual'])} pp")
        elif r["testable"]:
            out.append(f"- Random effect {f} ({r['levels']} levels, {r['method']}): share {_pct(r['share'], 1)}% "
                       f"(95% CI {_ci(r['share_ci'], 1)}%), sd {_pct(r['sd_factor'])} pp vs residual "
                       f"{_pct(r['sd_residual'])} pp")
        else:
            out.append(f"- Random effect {f}: {r['reason']}")
    return out + [""]


def _reproducibility(ident: dict[str, Any]) -> list[str]:
    out = ["## Bit-identity of identically configured runs", ""]
    if ident["n_groups"] == 0:
        return out + [str(ident["reason"]), ""]
    out.append(f"{ident['n_identical']}/{ident['n_groups']} config_key groups were bit-identical.")
    for f, levels in ident["by_determinism"].items():
        out += ["", *_table([f, "groups", "bit-identical", "mean accuracy range pp"],
                            [[lv, str(v["groups"]), str(v["identical"]), _pct(v["mean_accuracy_range"], 3)]
                             for lv, v in levels.items()])]
    for f, c in ident.get("cost", {}).items():
        out.append("")
        out.append(f"Wall time by {f}: " + ", ".join(
            f"{lv} {t:.1f} s (×{c['ratio_to_fastest'][lv]:.2f})" for lv, t in c["mean_wall_time_s"].items()))
    return out + [""]


def _flips(fl: dict[str, Any], plots: dict[str, str]) -> list[str]:
    out = ["## Prediction flips", ""]
    if fl.get("mean_churn") is None:
        out.append(str(fl.get("reason")))
    else:
        out.append(f"{fl['n_runs']} runs, {fl['n_ids']} shared validation ids "
                   f"({fl['n_ids_dropped']} not in every run; "
                   f"{fl.get('n_runs_other_validation_sets', 0)} runs on other validation splits left out). "
                   f"Mean pairwise churn {_pct(fl['mean_churn'])}%, max {_pct(fl['max_churn'])}%; "
                   f"{fl['n_ever_flipped']} examples flipped at least once. Majority vote accuracy "
                   f"{_pct(fl['majority_vote_accuracy'])}% vs mean run {_pct(fl['mean_run_accuracy'])}%.")
        out.append("")
        out.append(f"McNemar (paired correctness, consecutive replicates within one factor setting; Holm): "
                   f"{fl['n_mcnemar_significant']}/{len(fl['mcnemar'])} pairs differ at α=0.05.")
        if fl["top"]:
            out += ["", *_table(["id", "label", "majority pred", "flip rate %", "distinct preds"],
                                [[t["id"], t["label"], t["majority_pred"], _pct(t["flip_rate"], 1),
                                  str(t["n_distinct_preds"])] for t in fl["top"][:10]])]
        for key in ("churn", "flipped"):
            if key in plots:
                out += ["", f"![{key}]({plots[key]})"]
    for p in fl.get("problems", []):
        out.append(f"- predictions skipped: {p}")
    return out + [""]


def _cross_validation(cv: dict[str, Any] | None) -> list[str]:
    if not cv:
        return []
    out = ["## Cross-validation", "", f"{cv['folds']} folds; one CV estimate per seed (mean over its folds); "
           "CI: t interval over seeds; ensemble: per fold, the mean softmax of all seeds (as `predict --ensemble` "
           "serves; the majority vote for runs that logged no softmax), pooled over folds.", ""]
    rows = []
    for g in cv["groups"]:
        ens = g["ensemble"] or {}
        rows.append([", ".join(f"{k}={v}" for k, v in g["setting"].items()) or "all", str(g["n_seeds"]),
                     _pct(g["mean"]), _ci(g["ci"]), " ".join(_pct(a) for a in g["per_seed"]),
                     _pct(ens.get("accuracy"))])
    out += _table(["setting", "seeds", "CV mean %", "95% CI", "per seed", "ensemble %"], rows) + [""]
    if cv.get("comparisons"):
        out += _table(["a − b", "diff pp", "95% CI pp", "test", "p (Holm within CV)"],
                      [[f"{c['a']} − {c['b']}", _pct(c["diff"]), _ci(c["ci"]), c["method"] or "–",
                        _num(c.get("p_holm"))] for c in cv["comparisons"]]) + [""]
    return out


def render_markdown(rep: dict[str, Any]) -> str:
    """report.md text; the first section is always the Verdict."""
    out = ["## Verdict", ""] + [f"- {s}" for s in rep["verdict"]] + [""]
    if rep["title"]:
        out = [f"# {rep['title']}", ""] + out
    out += ["## Runs", "", f"{rep['n_runs']} runs: {rep['n_finished']} finished, {rep['n_failed']} excluded "
            "(not FINISHED or no valid accuracy)."]
    for r in rep["failed"][:20]:
        out.append(f"- {r.get('run_key', '?')}: {r.get('status', '?')} {r.get('failure_reason', '')}".rstrip())
    if rep["constants"]:
        out += ["", "Constants (not tested): " + ", ".join(f"{k}={v}" for k, v in rep["constants"].items())]
    if "accuracy_hist" in rep.get("plots", {}):
        out += ["", f"![accuracy histogram]({rep['plots']['accuracy_hist']})"]
    out += ["", "## Factors", ""]
    if not rep["factors"]:
        out += ["No factor has two or more levels among finished runs.", ""]
    for name, f in rep["factors"].items():
        out += _factor(name, f, rep.get("plots", {}))
    out += _multiplicity(rep.get("multiplicity"))
    out += _decomposition(rep["decomposition"], rep["random_effects"])
    out += _reproducibility(rep["identical"])
    out += _flips(rep["flips"], rep.get("plots", {}))
    out += _cross_validation(rep.get("cross_validation"))
    need = rep["seeds_needed"]
    out += ["## How many runs", "",
            f"Seed-noise std of a single run {_num(need.get('sigma_pp'))} pp, {need.get('n_per_group')} runs per "
            f"level: minimum detectable difference {_num(need.get('mde_pp'))} pp (α={need['alpha']} over "
            f"{need.get('tests', 1)} tests, power {need['power']}, "
            f"{'paired' if need.get('design') == 'paired' else 'two-sample'} t)."
            f" Runs per level to detect {need.get('delta_pp')} pp: {need.get('n_needed') or '–'} (expected power over "
            f"the std's uncertainty); "
            f"power at that difference now: {_num(need.get('power_at_delta'), 2)}. {need.get('note', '')}".rstrip(), ""]
    return "\n".join(out)
