"""Which test a verdict sentence states for a factor, and the effect it prints beside it.

The interval printed beside a Holm-adjusted p is adjusted too: a t interval at level 1 − α/m (Bonferroni over
the m tests of the verdict's family, times the pairs of the factor when it has more than two levels). A
Bonferroni interval that excludes 0 means p < α/m, which Holm always rejects, so the interval never
contradicts the sentence's "beyond / not distinguishable from seed noise". Its coverage is >= 95% for all
printed intervals together (simultaneous), hence above 95% for each one.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.intervals import adjusted_ci
from harness.analysis.levels import ALPHA


def mean_test(f: dict[str, Any]) -> tuple[str, float | None] | None:
    """The mean test the verdict uses: paired RM-ANOVA, else the multi-factor model's type-III F, else Welch.

    None when the factor's replicates are identical within every cell (nothing to test against)."""
    m = f["mean_tests"]
    if m.get("paired") and m["paired"]["anova_rm"]:
        return "repeated-measures ANOVA (seed blocks)", m["paired"]["anova_rm"]["p"]
    model = f.get("model_tests")
    if model is not None:
        return ("type-III F within the multi-factor model", model["p"]) if "p" in model else None
    if not m["testable"]:
        return None
    if m.get("welch") and m["welch"].get("p") is not None:
        return "Welch ANOVA", m["welch"]["p"]
    return "one-way ANOVA", (m.get("anova") or {}).get("p")


def spread_test(f: dict[str, Any]) -> tuple[str, float | None] | None:
    """The spread test the verdict uses: Pitman–Morgan when paired, else Bartlett (within cells in a model)."""
    paired = f["mean_tests"].get("paired")
    if paired and paired["spread_p"] is not None:
        return "Pitman–Morgan (seed blocks)", paired["spread_p"]
    model = f.get("model_tests")
    if model is not None:
        spread = model.get("spread") or {}
        return ("Bartlett within cells", spread["p"]) if spread.get("p") is not None else None
    if f["variance_tests"]["testable"]:
        return "Bartlett", (f["variance_tests"].get("bartlett") or {}).get("p")
    return None


def best_vs_worst(factor: dict[str, Any], tests: int = 1, alpha: float = ALPHA) -> dict[str, Any] | None:
    """Highest- vs lowest-mean level, the difference and its interval at the level of the verdict's test.

    Means are the model's marginal means in a multi-factor design, else level means; the difference is the
    paired mean difference when paired. `tests`: the size of the Holm family the claim belongs to. In a
    one-at-a-time design the base is one of the two: the move farthest from it, adjusted over the k − 1 moves.
    """
    paired = factor["mean_tests"].get("paired")
    paired = paired if paired and paired.get("anova_rm") else None
    model = {} if paired else (factor.get("model_tests") or {})
    if model.get("marginal_means"):
        means = {lv: m for lv, m in model["marginal_means"].items() if m is not None}
        pairs, method = model["pairs"], f"marginal means of the multi-factor model, t on {model['df_denom']:g} df"
    else:
        tested = set(factor["mean_tests"].get("levels") or [r["level"] for r in factor["levels"]])
        means = {r["level"]: r["mean"] for r in factor["levels"] if r["mean"] is not None and r["level"] in tested}
        if len(means) < 2:
            means = {r["level"]: r["mean"] for r in factor["levels"] if r["mean"] is not None}
        pairs, method = (paired["pairwise"], "paired t") if paired else (factor["mean_tests"].get("pairwise", []),
                                                                          "Welch")
    if len(means) < 2:
        return None
    ranked = sorted(means, key=lambda lv: means[lv])  # sorted, so equal means still name two levels
    best, worst = ranked[-1], ranked[0]
    k = len(means)
    adjust = max(tests, 1) * k * (k - 1) // 2
    base = factor["mean_tests"].get("base")
    if base in means:
        move = max((lv for lv in ranked if lv != base), key=lambda lv: abs(means[lv] - means[base]))
        best, worst = sorted((move, base), key=lambda lv: means[lv], reverse=True)
        adjust = max(tests, 1) * (k - 1)
    out = {"best": best, "worst": worst, "diff": means[best] - means[worst], "ci": None, "ci_level": 1 - alpha / adjust,
           "adjusted_over": adjust, "p_holm": None, "method": method}
    for pair in pairs:
        if {pair["a"], pair["b"]} != {best, worst}:
            continue
        sign = 1 if pair["a"] == best else -1
        if paired and not model:
            out["diff"], out["method"] = sign * pair["mean_diff"], f"paired t over {pair['n_pairs']} seed blocks"
        df = pair.get("df") if (model or paired) else pair.get("welch_df")
        ci = adjusted_ci(sign * pair["mean_diff"], pair.get("se"), df, out["ci_level"])
        out["ci"] = sorted(ci) if ci else None
        out["p_holm"] = pair.get("p_holm") if paired else pair.get("welch_p_holm")
    return out


def effect_text(bw: dict[str, Any]) -> str:
    """'a vs b: +1.20 pp (method, 98.75% CI … pp: 95% Bonferroni-adjusted over 4 tests)'."""
    ci = ""
    if bw["ci"]:
        lo, hi = 100 * bw["ci"][0], 100 * bw["ci"][1]
        ci = f", 95% CI {lo:+.2f} to {hi:+.2f} pp"
        if bw["adjusted_over"] > 1:
            ci = (f", {100 * bw['ci_level']:.4g}% CI {lo:+.2f} to {hi:+.2f} pp: 95% Bonferroni-adjusted over "
                  f"{bw['adjusted_over']} tests, like the test")
    return f"{bw['best']} vs {bw['worst']}: {100 * bw['diff']:+.2f} pp ({bw['method']}{ci})"
