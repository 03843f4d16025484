"""Sequential replication (issue 30) at scale: error rates under looking after every seed, power and trainings,
equivalence. Seeded numpy through the functions `harness.analysis.sequential.decide` uses (tests/analysis/
sequential_simulation.py; the suite checks decide() stops where they stop). No TensorFlow.

    python benchmarks/sequential_replication.py                       # 10,000 studies per scenario, ~10 s
    python benchmarks/sequential_replication.py --figure docs/sequential.png

Prints a Markdown table for docs/methods.md and `RESULT name = value [target]` lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "analysis"))

import sequential_simulation as sim  # noqa: E402

from harness.analysis import sequential as sq  # noqa: E402


def scenarios(seed: int, studies: int, paired: bool) -> tuple[list[tuple[str, float, str]], dict]:
    rng = np.random.default_rng([seed, int(paired)])
    tag = "paired" if paired else "independent"
    rows: list[tuple[str, float, str]] = []
    a, b = sim.draw(rng, studies, 0.0, 0.01, 30)
    r = sim.sequential(a, b, 0.01, 3, paired)
    null_curve = _first_effect_curve(a, b, paired)
    rows += [(f"{tag} null, 1 pp seed std, looks 3..30: 'effect' declared", (r["state"] == "effect").mean(), "≤ 0.05"),
             ("  fixed-n Welch t, tested after every seed", sim.fixed_peeking(a, b, 3).mean(), ""),
             ("  'no effect larger than 1 pp' declared", (r["state"] == "no_effect").mean(), ""),
             ("  mean seeds per level", r["n"].mean(), "")]
    a, b = sim.draw(rng, studies, 0.02, 0.01, 30)
    r = sim.sequential(a, b, 0.01, 3, paired)
    power = float(((r["state"] == "effect") & (r["sign"] > 0)).mean())
    same = sim.fixed_n_for_power(0.02, 0.01, min(power, 0.999))
    n80 = sim.fixed_n_for_power(0.02, 0.01, 0.8)
    rows += [(f"{tag} planted 2 pp at 1 pp seed std: power", power, "≥ 0.8"),
             ("  mean trainings (both levels)", 2 * r["n"].mean(), ""),
             (f"  fixed-n trainings at the same power (capped at 0.999): 2 × {same}", 2 * same, ""),
             ("  saved vs that", 1 - r["n"].mean() / same, "≥ 0.2"),
             (f"  fixed-n trainings at power 0.8: 2 × {n80}", 2 * n80, ""),
             ("  saved vs that", 1 - r["n"].mean() / n80, "")]
    stops = r["n"]
    a, b = sim.draw(rng, studies, 0.002, 0.005, 60)
    r = sim.sequential(a, b, 0.01, 3, paired)
    cover = np.mean((r["lo"] <= 0.002) & (0.002 <= r["hi"]))
    rows += [(f"{tag} planted 0.2 pp at 0.5 pp seed std, resolution 1 pp, max 60: 'no effect > 1 pp'",
              (r["state"] == "no_effect").mean(), "≥ 0.9"),
             ("  'effect' with the wrong sign", ((r["state"] == "effect") & (r["sign"] < 0)).mean(), "≤ 0.05"),
             ("  'effect' with the right sign (the planted 0.2 pp found)",
              ((r["state"] == "effect") & (r["sign"] > 0)).mean(), ""),
             ("  interval at the stop covers 0.2 pp", cover, "≥ 0.95"),
             ("  mean seeds per level", r["n"].mean(), "")]
    return rows, {"null_curve": null_curve, "stops": stops}


def runner_rounds(seed: int, studies: int, shift: float, sd: float, maximum: int) -> dict[str, float]:
    """The runner's own round policy (execution.rounds.train_in_rounds: growing rounds, paired seeds) on a
    two-level study whose trainings are draws, with the queue and MLflow stood in for: power and trainings."""
    from harness.execution import rounds
    from harness.study.design import plan_runs
    from harness.study.spec import parse_spec

    spec = parse_spec(f"name: sim\nrepeats: {{min: 3, max: {maximum}, resolution_pp: 1.0}}\n"
                      "factors: {augmentation.enabled: [false, true]}\n", Path("sim.yaml"))
    runs = plan_runs(spec, "fp", 28)
    rng = np.random.default_rng(seed)
    effects, trainings = [], []
    for _ in range(studies):
        rows: list[dict] = []
        draws = {run.run_key: 0.9 + shift * (run.factors["augmentation.enabled"] == "on") + rng.normal(0, sd)
                 for run in runs}

        def enqueue(batch: list, rows: list[dict] = rows, draws: dict = draws) -> None:
            done = {r["run_key"] for r in rows}
            rows += [{"run_key": r.run_key, "replicate": r.replicate, "seed_block": r.seed_block,
                      "accuracy": draws[r.run_key], **r.factors} for r in batch if r.run_key not in done]

        rounds.study_table = lambda client, exp_id, planned, rows=rows: pd.DataFrame(rows)
        rounds.tracking.log_round = lambda *args: 0
        decision = rounds.train_in_rounds(runs, spec, None, "", "", enqueue, lambda total: None, 1)
        comp = decision["comparisons"][0]
        effects.append(comp["state"] == "effect" and comp["diff_pp"] < 0)  # a = off, b = on: on is higher
        trainings.append(len(rows))
    return {"power": float(np.mean(effects)), "trainings": float(np.mean(trainings))}


def _first_effect_curve(a: np.ndarray, b: np.ndarray, paired: bool) -> dict[str, np.ndarray]:
    """Share of null studies that have declared an effect by each look: sequential vs the fixed-n t test."""
    from scipy import stats as ss

    _, lo, hi = sq.paired_looks(b - a, 0.05) if paired else sq.two_sample_balanced(b, a, 0.05)
    seq = np.maximum.accumulate((lo > 0) | (hi < 0), axis=1)[:, 2:].mean(axis=0)
    fixed = np.zeros(len(a), bool)
    curve = []
    for n in range(3, a.shape[1] + 1):
        fixed |= ss.ttest_ind(b[:, :n], a[:, :n], axis=1, equal_var=False).pvalue < 0.05
        curve.append(fixed.mean())
    return {"sequential": seq, "fixed": np.array(curve)}


def figure(path: Path, extra: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    looks = np.arange(3, 31)
    left.plot(looks, extra["null_curve"]["fixed"], label="fixed-n Welch t, tested after every seed")
    left.plot(looks, extra["null_curve"]["sequential"], label="sequential (t confidence sequence)")
    left.axhline(0.05, color="grey", linestyle=":")
    left.set(xlabel="seeds per level", ylabel="null studies with an 'effect' so far", title="No effect, 1 pp seed std")
    left.legend(fontsize=8)
    right.hist(extra["stops"], bins=np.arange(2.5, 31.5), color="tab:orange")
    right.set(xlabel="seeds per level at the stop", ylabel="studies", title="Planted 2 pp at 1 pp seed std")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000, help="simulated studies per scenario (default 10000)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--figure", type=Path, help="write the two-panel PNG here")
    parser.add_argument("--runner-studies", type=int, default=300,
                        help="studies through the runner's round policy (slower: decide() per round; default 300)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows, extra = scenarios(args.seed, args.studies, paired=False)
    rows += scenarios(args.seed, args.studies, paired=True)[0]
    if args.runner_studies:
        r = runner_rounds(args.seed, args.runner_studies, 0.02, 0.01, 30)
        rows += [(f"runner's rounds ({args.runner_studies} studies), planted 2 pp at 1 pp, paired: power", r["power"],
                  "≥ 0.8"), ("  mean trainings (both levels)", r["trainings"], "")]
    print(f"| quantity ({args.studies} studies per scenario, seed {args.seed}) | value | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.4g} | {target} |")
    head = ""
    for name, value, target in rows:
        head = head if name.startswith("  ") else name.split(":")[0]
        label = f"{head}: {name.strip()}" if name.startswith("  ") else name
        print(f"RESULT {label} = {value:.4g}" + (f"  [target {target}]" if target else ""))
    if args.figure:
        figure(args.figure, extra)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
