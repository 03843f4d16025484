"""Study throughput: a 20-training study through `python -m harness run` vs one Python process per training.

Both read the same contest CSV (written by `python -m harness data synth`), apply the same preprocessing
(stretch → binarize → erode, 28 px), train the same default CNN for the same epochs on the same split size and log
every training to a SQLite MLflow store. The naive loop (`naive_train.py`, one process per training) is split in two
halves run before and after the harness study, so load changes hit both alike. Reports trainings per hour and
the ratio harness / naive (target ≥ 2).

    python benchmarks/bench_throughput.py [--trainings 20] [--n 1000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, finished_wall_times, median, result, run_timed, study_spec

PIPELINE = ["stretch", "binarize", "erode"]  # the notebook's steps at 28 px (no ×3 upscale: 9× the training cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    run_timed([sys.executable, "-m", "harness", "data", "synth", "--out", str(tmp), "--n", str(args.n)], tmp)
    csv = tmp / "train.csv"

    naive_uri = f"sqlite:///{tmp / 'naive' / 'mlflow.db'}"
    (tmp / "naive").mkdir()
    naive_script = str(REPO / "benchmarks" / "naive_train.py")

    def naive(seeds: range) -> list[float]:
        times = []
        for seed in seeds:
            command = [
                sys.executable,
                naive_script,
                "--csv",
                str(csv),
                "--seed",
                str(seed),
                "--epochs",
                str(args.epochs),
            ]
            times.append(run_timed([*command, "--tracking-uri", naive_uri], tmp))
        return times

    half = args.trainings // 2
    spec = study_spec(
        "throughput",
        n=args.n,
        epochs=args.epochs,
        repeats=args.trainings,
        pipeline=PIPELINE,
        data={"source": "csv", "path": str(csv)},
    )
    (tmp / "harness").mkdir()
    (tmp / "harness" / "study.yaml").write_text(spec)

    print(f"throughput: {args.trainings} trainings each, {args.n} images, {args.epochs} epochs, pipeline {PIPELINE}")
    naive_times = naive(range(half))
    started = time.perf_counter()
    run_timed([sys.executable, "-m", "harness", "run", "study.yaml", "--no-progress"], tmp / "harness")
    harness_s = time.perf_counter() - started
    naive_times += naive(range(half, args.trainings))
    naive_s = sum(naive_times)

    in_run = finished_wall_times(tmp / "harness", "throughput")
    assert len(in_run) == args.trainings, f"harness finished {len(in_run)} of {args.trainings}"
    print(
        f"  harness: {harness_s:.1f} s for {args.trainings} ({3600 * args.trainings / harness_s:.0f}/h); "
        f"median train_run {median(in_run):.2f} s"
    )
    print(
        f"  naive:   {naive_s:.1f} s for {args.trainings} ({3600 * args.trainings / naive_s:.0f}/h); "
        f"median process {median(naive_times):.2f} s"
    )
    result("throughput.harness_over_naive", naive_s / harness_s, ">= 2", "trainings per hour, harness / naive")
    result("throughput.harness_per_hour", 3600 * args.trainings / harness_s)
    result("throughput.naive_per_hour", 3600 * args.trainings / naive_s)


if __name__ == "__main__":
    main()
