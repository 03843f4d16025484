"""Long calibration run of the report's statistics (issues 15, 28, 30): the suite's simulations at ≥ 10,000 studies.

    python benchmarks/stats_simulation.py                 # about 4 minutes on a shared 2-core box
    python benchmarks/stats_simulation.py --power-studies 200   # the pilot → study loops are the slow part
    python benchmarks/stats_simulation.py --studies 20000 --seed 7

Prints `RESULT name = value [target ...]` lines (like the other benchmarks) and a Markdown table for
docs/methods.md. The designs and the scipy calls are those of tests/analysis/simulation.py, which the
suite checks against `analyze()` on real runs tables. No TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "analysis"))
sys.path.insert(0, str(REPO))

import simulation as sim  # noqa: E402


def round_two(n: int, rng: Callable[[int], np.random.Generator]) -> list[tuple[str, float, str]]:
    """Issue 28: multi-factor designs, copies nobody marked, intervals adjusted like the tests."""
    rows: list[tuple[str, float, str]] = []
    r = sim.unused_seed(rng(70), n)
    before = sim.holm_adjust(r["family_copies_counted"]) < 0.05
    rows += [("any false claim, 3 levels × 5, level 0 one training under 5 config_keys (weights first)",
              sim.family_rejects(r["family"]).mean(), "≤ 0.07"),
             ("  counted by config_key (before): mean claim", before[:, 0].mean(), ""),
             ("  spread claim", before[:, 1].mean(), "")]
    for label, kw, false_cols, found in (
            ("2 × 2 × 8, B helps only at a1 (interaction)", {"ab": 0.02}, [1, 3], 2),
            ("2 × 2, cells 8/3/3/8, +2 pp on B, A null", {"cells": (8, 3, 3, 8), "b": 0.02}, [0, 1, 3], 2),
            ("2 × 2 × 8, all null", {}, [0, 1, 2, 3], None)):
        r = sim.two_by_two(rng(71 + len(rows)), n, **kw)
        new = sim.holm_adjust(r["family"]) < 0.05
        old = sim.holm_adjust(r["pooled"]) < 0.05
        both = sim.covered(r["ci_a"], r["truth"][0]) & sim.covered(r["ci_b"], r["truth"][1])
        rows += [(f"any false claim, {label}: within the model", new[:, false_cols].any(axis=1).mean(), "≤ 0.07"),
                 ("  one factor at a time (before)", old[:, false_cols].any(axis=1).mean(), "")]
        if found is not None:
            rows.append(("  power, planted B effect found (model)", new[:, found].mean(), "≥ 0.9"))
        rows += [("  coverage of the verdict's adjusted intervals, both at once (Bonferroni, 98.75% each)",
                  both.mean(), "≥ 0.95"),
                 ("  coverage of one adjusted interval (A)", sim.covered(r["ci_a"], r["truth"][0]).mean(), "≥ 0.95")]
    return rows


def seeds_needed_power(studies: int, rng: Callable[[int], np.random.Generator]) -> list[tuple[str, float, str]]:
    """Issue 30, fixed-n sentence: power of the verdict's test at the n a pilot's report recommends (Δ = σ = 1 pp)."""
    from statsmodels.stats.power import TTestIndPower

    from harness.analysis.power import seeds_needed

    def new(s: float, dof: float, tests: int) -> int:
        return seeds_needed(None, sigma=s, sigma_df=dof, n_per_group=5, delta_pp=1.0, tests=tests)["n_needed"]

    def old(s: float, dof: float, tests: int) -> int:
        n = TTestIndPower().solve_power(effect_size=0.01 / s, alpha=0.05, power=0.8, ratio=1.0)
        return max(2, int(np.ceil(float(np.squeeze(n)))))

    from harness.analysis.intervals import share_gci

    rows: list[tuple[str, float, str]] = []
    for reps in (1, 2):
        cover = sim.crossed_share_coverage(rng(97 + reps), studies, share_gci, reps=reps).mean(axis=0)
        rows.append((f"coverage share-of-a-single-run CI (generalized), crossed 6 × 6 × {reps}: order / init",
                     float(cover[0]), "[0.93, 0.97]"))
        rows.append(("  init", float(cover[1]), "[0.93, 0.97]"))
    mde = seeds_needed(None, sigma=sim.SIGMA, n_per_group=16, tests=4)["mde_pp"] / 100
    for b in (0.0, 0.02):
        r = sim.two_by_two(rng(95 + int(100 * b)), 10 * studies, a=mde, b=b)
        rows.append((f"power at the stated smallest detectable difference ({100 * mde:.2f} pp), 2 × 2 × 8, B effect "
                     f"{100 * b:g} pp", float(np.mean(sim.holm_adjust(r["family"])[:, 0] < 0.05)), "[0.75, 0.85]"))
    for k, (design, label) in enumerate((("two_levels", "pilot 2 × 5"), ("crossed", "pilot seeds 6 × 6 crossed"),
                                         ("factorial", "pilot 2 × 2 × 5"))):
        got = sim.pilot_then_study(rng(90 + k), studies, design, new)
        before = sim.pilot_then_study(rng(90 + k), studies, design, old, residual_only=design == "crossed")
        rows += [(f"power at the recommended n, {label} (median n {got['median_n']:g})", got["power"], "[0.75, 0.85]"),
                 (f"  before: plain t at α, σ̂ plugged in{', residual after seed effects' * (design == 'crossed')}"
                  f" (median n {before['median_n']:g})", before["power"], "")]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000, help="simulated studies per design (default 10000)")
    parser.add_argument("--failure-studies", type=int, default=2_000,
                        help="studies for the failures design (a loop, not vectorised; default 2000)")
    parser.add_argument("--power-studies", type=int, default=1_000,
                        help="pilot → study pairs per design for the seeds-needed check (a loop; default 1000)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    n, seed = args.studies, args.seed
    started = time.perf_counter()
    rows: list[tuple[str, float, str]] = []

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k])

    r = sim.factorial_copies(rng(1), n)
    rows += [("FWER factorial, one level copied 3× (distinct runs)", sim.family_rejects(r["family"]).mean(),
              "[0.03, 0.07]"),
             ("  one-way ANOVA with the copies counted (the old bug)", (r["anova_copies_counted"] < 0.05).mean(), "")]
    r = sim.paired(rng(2), n)
    cover = np.mean((r["diff_ci"][:, 0] <= 0) & (0 <= r["diff_ci"][:, 1]))
    rows += [("FWER paired seeds, 2 levels × 5 blocks (paired t + Pitman–Morgan)",
              sim.family_rejects(r["family"]).mean(), "[0.03, 0.07]"),
             ("  Bartlett ignoring the pairing", (r["bartlett_p"] < 0.05).mean(), ""),
             ("coverage paired-difference t CI, 5 blocks", cover, "[0.93, 0.97]")]
    r = sim.one_at_a_time(rng(3), n)
    rows += [("FWER one-at-a-time, A on base runs only (B moves +2 pp)", sim.family_rejects(r["family"]).mean(),
              "[0.03, 0.07]"),
             ("  A with every a0 run pooled (the old bug)", (r["pooled_base_p"] < 0.05).mean(), "")]
    r = sim.failures(rng(4), args.failure_studies)
    size = np.nanmean(r["family"] < 0.05, axis=0)
    rows += [("FWER 3 levels × 10 runs, 20% failures everywhere", sim.family_rejects(r["family"]).mean(),
              "[0.03, 0.07]"),
             ("  Welch ANOVA alone", size[0], "[0.03, 0.07]"), ("  Bartlett alone", size[1], "[0.03, 0.07]"),
             ("  Fisher–Freeman–Halton alone (discrete)", size[2], "≤ 0.05")]
    for k in (3, 5):
        c = sim.mean_std_coverage(rng(10 + k), n, k)
        rows += [(f"coverage t CI of a level mean, n = {k}", c["mean"], "[0.93, 0.97]"),
                 (f"coverage χ² CI of a level std, n = {k}", c["std"], "[0.93, 0.97]"),
                 (f"coverage Welch CI of a difference, n = {k}", sim.welch_diff_coverage(rng(20 + k), n, k),
                  "[0.93, 0.97]")]
    for k in (3, 5):
        rows.append((f"power 2 pp shift at 0.6 pp seed std, {k} runs per level", sim.shift_power(rng(30 + k), n, k),
                     "≥ 0.9" if k == 5 else ""))
    pr = sim.paired(rng(40), n, shift=0.02, blocks=3)
    rows.append(("power 2 pp shift, paired, 3 blocks", float(np.mean(sim.holm_adjust(pr["family"])[:, 0] < 0.05)), ""))
    for reps in (1, 2):
        r = sim.crossed(rng(60 + reps), n, reps=reps)
        rows += [(f"coverage partial-share CI, crossed 6 × 6 × {reps}, order (0.6 of total)", r["a_covered"].mean(),
                  "[0.93, 0.97]"),
                 (f"coverage partial-share CI, crossed 6 × 6 × {reps}, init (0.2 of total)", r["b_covered"].mean(),
                  "[0.93, 0.97]"),
                 (f"power crossed 6 × 6 × {reps}: order / init found", (r["a_p"] < 0.05).mean(), "≥ 0.9"),
                 ("  init", (r["b_p"] < 0.05).mean(), "≥ 0.9" if reps == 2 else "")]
    for k in (10, 30, 45):
        rows.append((f"power 3× variance (Bartlett), {k} runs per level", sim.variance_power(rng(50 + k), n, k),
                     "≥ 0.9" if k == 45 else ""))

    rows += round_two(n, rng)
    rows += seeds_needed_power(args.power_studies, rng)

    print(f"| quantity ({n} studies per design; failures {args.failure_studies}; pilot → study "
          f"{args.power_studies}; seed {seed}) | value | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.4f} | {target} |")
    for name, value, target in rows:
        print(f"RESULT {name.strip()} = {value:.4f}" + (f"  [target {target}]" if target else ""))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
