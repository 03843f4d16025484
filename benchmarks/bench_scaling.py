"""Scaling: the same 8-training study with `--workers 1` vs `--workers 2` on this machine.

One worker gets `determinism.intra_op_threads: 2`, two workers get 1 each (both `inter_op_threads: 1`), so
either way TensorFlow uses as many threads as there are cores. The studies run as `python -m harness run`
subprocesses in fresh folders, ABBA-interleaved. Reports the end-to-end speedup (target ≥ 1.8) and the speedup of
the training span (first training start → last training end, i.e. without process start-up).

    python benchmarks/bench_scaling.py [--trainings 8] [--n 1000] [--epochs 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import (
    cores_per_training,
    describe,
    finished_wall_times,
    harness_run,
    median,
    result,
    study_spec,
    training_span,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=8)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))

    def spec(workers: int) -> str:
        threads = {"intra_op_threads": max(1, cores // workers), "inter_op_threads": 1}
        return study_spec("scaling", n=args.n, epochs=args.epochs, repeats=args.trainings, determinism=threads)

    wall: dict[str, list[float]] = {"workers_1": [], "workers_2": []}
    span: dict[str, list[float]] = {"workers_1": [], "workers_2": []}
    cores_used: dict[str, list[float]] = {"workers_1": [], "workers_2": []}
    training: dict[str, list[float]] = {"workers_1": [], "workers_2": []}
    print(
        f"scaling: {args.trainings} trainings, {args.n} images, {args.epochs} epochs, {cores} cores; "
        f"intra_op_threads {cores} (1 worker) / {max(1, cores // 2)} (2 workers), inter_op_threads 1"
    )
    for round_index in range(args.repeats):
        order = (1, 2) if round_index % 2 == 0 else (2, 1)
        for workers in order:
            seconds, folder = harness_run(spec(workers), tmp, workers)
            wall[f"workers_{workers}"].append(seconds)
            span[f"workers_{workers}"].append(training_span(folder, "scaling"))
            cores_used[f"workers_{workers}"].append(cores_per_training(folder, "scaling"))
            training[f"workers_{workers}"].append(median(finished_wall_times(folder, "scaling")))
    print("  wall " + describe(wall))
    print("  training span " + describe(span))
    print("  one training's seconds (median of a study) " + describe(training))
    print("  cores one training keeps busy (its worker's CPU seconds / wall seconds) " + describe(cores_used, unit=""))
    result("scaling.speedup_2_workers", median(wall["workers_1"]) / median(wall["workers_2"]), ">= 1.8")
    result("scaling.speedup_2_workers_training_span", median(span["workers_1"]) / median(span["workers_2"]))
    result("scaling.cores_per_training_1_worker", median(cores_used["workers_1"]),
           note=f"intra_op_threads {cores}: how much of the machine one worker already uses")
    result("scaling.cores_per_training_2_workers", median(cores_used["workers_2"]), note="intra_op_threads 1 each")
    result("scaling.training_slowdown_2_workers", median(training["workers_2"]) / median(training["workers_1"]),
           note="seconds per training, 2 workers side by side / 1 worker alone")


if __name__ == "__main__":
    main()
