"""Seeds in rounds until the answer is known: a study with `repeats: {min, max, resolution_pp}` (issue 30).

Round 1 trains `min` seeds of every design point. After each round the study's runs table goes to
`harness.analysis.sequential.decide`, the same rule the report applies; the next round enqueues seeds only for the
design points whose levels sit in a comparison still open (one at a time: the base point and the moved one): as
many per point as the comparison is projected to need (`more_seeds`), but at most a quarter again what the point
holds, or the workers' share if larger (each round costs worker start-ups; looks at growing intervals, as in
group-sequential designs), and at least a seed batch where the study trains them (`execution.batch_seeds`). It
stops when every comparison is settled, or the open ones are at `max`. Replicate r draws the same seeds at every
point, so every round keeps the comparisons paired.

Resume: a point's target is never below what the store already holds, runs queued by a stopped round are drained
first, and the round count goes on from the last one logged on the parent run. Each round is logged there
(`tracking.log_round`): its counts as metrics by round (`sequential.open`, `.effect`, `.no_effect`, `.trainings`),
`harness.sequential.round`, `.state` and `.reason` (why it stopped, once it has) as tags.
The queue is reached only through the two callables the runner passes, `enqueue(runs)` and `drain(total)`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd

from harness import tracking
from harness.analysis.sequential import decide
from harness.study.design import PlannedRun

Point = tuple[tuple[str, str], ...]
GROWTH = 0.25  # a round adds at most this share of what a point holds (or the workers' share, if larger)


def design_points(runs: list[PlannedRun]) -> dict[Point, list[PlannedRun]]:
    """The study's planned runs by design point (its factor levels), each point's runs in replicate order."""
    points: dict[Point, list[PlannedRun]] = {}
    for run in runs:
        points.setdefault(tuple(run.factors.items()), []).append(run)
    return {p: sorted(rs, key=lambda r: r.replicate) for p, rs in points.items()}


def study_table(client: Any, exp_id: str, runs: list[PlannedRun]) -> pd.DataFrame:
    """The runs table of this version of the spec (what `report SPEC` reads)."""
    table = tracking.runs_table(client, exp_id)
    keys = {run.run_key for run in runs}
    return table[table["run_key"].isin(keys)].reset_index(drop=True) if not table.empty else table


def held(table: pd.DataFrame, runs: list[PlannedRun]) -> int:
    """Replicates of one point the store holds: one past the highest replicate logged (finished or failed)."""
    if table.empty:
        return 0
    logged = set(table["run_key"])
    return max((run.replicate + 1 for run in runs if run.run_key in logged), default=0)


def points_of(comparison: dict[str, Any], points: list[Point], design: str, base: dict[str, str]) -> list[Point]:
    """The design points whose runs answer one comparison: its two levels (one at a time: others at base)."""
    factor, levels = comparison["factor"], {comparison["a"], comparison["b"]}
    out = []
    for point in points:
        labels = dict(point)
        if labels.get(factor) not in levels:
            continue
        if design == "one_at_a_time" and any(labels[k] != base[k] for k in labels if k != factor):
            continue
        out.append(point)
    return out


def next_targets(decision: dict[str, Any], points: dict[Point, list[PlannedRun]], target: dict[Point, int],
                 maximum: int, workers: int, design: str) -> dict[Point, int]:
    """Points that get more seeds next round, and how many each will hold then (never above `maximum`)."""
    base = dict(next(iter(points))) if points else {}  # plan order starts at the base point
    grow: dict[Point, int] = {}
    for comp in decision["comparisons"]:
        if comp["state"] != "open" or comp["more_seeds"] <= 0:
            continue
        chosen = points_of(comp, list(points), design, base)
        share = max(1, math.ceil(workers / max(1, len(chosen))))
        for point in chosen:
            batch = points[point][0].config.execution.batch_seeds
            # up to a quarter again what the point holds (a round costs worker start-ups), never beyond the projection
            step = max(min(comp["more_seeds"], max(share, math.ceil(target[point] * GROWTH))), batch)
            new = min(maximum, len(points[point]), target[point] + step)
            if new > target[point]:
                grow[point] = max(grow.get(point, 0), new)
    return grow


def reason(decision: dict[str, Any], grow: dict[Point, int], target: dict[Point, int], maximum: int) -> str:
    """Why the study stopped, or what the next round trains, in one line (logged on the parent run)."""
    comps = decision["comparisons"]
    open_ = [f"{c['factor']} {c['a']} vs {c['b']}" for c in comps if c["state"] == "open"]
    settled = len(comps) - len(open_)
    if decision["state"] == "settled":
        return f"stopped: every comparison settled ({settled} of {len(comps)})"
    if not grow:
        return (f"stopped: {len(open_)} comparison(s) still open at the maximum of {maximum} seeds "
                f"({'; '.join(open_)})")
    added = sum(new - target[point] for point, new in grow.items())
    return (f"{len(open_)} of {len(comps)} comparison(s) open ({'; '.join(open_)}): next round trains {added} more "
            f"run(s) over {len(grow)} design point(s)")


def counts(decision: dict[str, Any], table: pd.DataFrame) -> dict[str, float]:
    """A round's numbers, logged as metrics by round on the parent run."""
    comps = decision["comparisons"]
    return {"sequential.trainings": float(len(table)),
            **{f"sequential.{state}": float(sum(c["state"] == state for c in comps))
               for state in ("open", "effect", "no_effect")}}


def train_in_rounds(runs: list[PlannedRun], spec: Any, client: Any, exp_id: str, parent_id: str,
                    enqueue: Callable[[list[PlannedRun]], Any], drain: Callable[[int], None],
                    workers: int) -> dict[str, Any]:
    """Train `spec.repeats.min` seeds per point, then rounds until decide() settles every comparison or `max`."""
    plan = spec.sequential
    points = design_points(runs)
    table = study_table(client, exp_id, runs)
    target = {p: max(plan.min, held(table, rs)) for p, rs in points.items()}
    while True:
        enqueue([run for p, rs in points.items() for run in rs[: target[p]]])
        drain(sum(target.values()))
        table = study_table(client, exp_id, runs)
        target = {p: max(target[p], held(table, rs)) for p, rs in points.items()}
        decision = decide(table, plan.resolution_pp, alpha=plan.alpha, max_repeats=plan.max)
        grow = next_targets(decision, points, target, plan.max, workers, spec.design) if decision[
            "state"] == "open" else {}
        why = reason(decision, grow, target, plan.max)
        round_index = tracking.log_round(client, parent_id, counts(decision, table),
                                         {"harness.sequential.state": decision["state"],
                                          "harness.sequential.reason": why[:5000]})
        print(f"round {round_index}: {why}", file=sys.stderr)
        if not grow:
            return decision
        target.update(grow)
