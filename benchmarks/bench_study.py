"""Issue 17's side-by-side study: the notebook's two-stage training, 6 seeds, as a user runs it.

Six seeds of the same CNN (`build_cnn`, default config), 10 epochs on stretched 28-px images then 10 on
stretched → binarized → eroded ones, on the 1,537 labelled contest images (../shared/data/dacon2020) or, without
them, as many synthetic ones. The notebook way is one Python process per training (`naive_train.py`: pandas,
per-image cv2, Keras `fit`, `mlflow.start_run`); the harness way is one `harness run` of a 6-run study, with 1
and with 2 workers, at its default settings (op determinism on) and with op determinism off (what the default
costs). With `--jax`, also on the jax backend, one training at a time and seed-batched (`execution.batch_seeds`
= the seeds: all in one K-lane step). Order: naive half, harness ×3 (×5), naive half, so load changes hit both.

    python benchmarks/bench_study.py [--seeds 6] [--epochs 10] [--jax]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cores_per_training, finished_trainings, median, result, run_timed

REAL_CSV = REPO.parent / "shared" / "data" / "dacon2020" / "train.csv.gz"
STRETCHED, BINARIZED = ["stretch"], ["stretch", "binarize", "erode"]


def study(name: str, csv: Path, seeds: int, epochs: int, op_determinism: bool, backend: str = "tensorflow",
          batch_seeds: int = 1) -> str:
    """The notebook's schedule as a study: the seeds are replicates, two stages in order."""
    spec = {
        "name": name,
        "data": {"source": "csv", "path": str(csv)},
        "repeats": seeds,
        "base": {
            "backend": backend,
            "execution": {"batch_seeds": batch_seeds},
            "determinism": {"op_determinism": op_determinism},
            "stages": {"stretched": {"pipeline": STRETCHED, "epochs": epochs},
                       "binarized": {"pipeline": BINARIZED, "epochs": epochs}},
            "stage_order": ["stretched", "binarized"],
        },
    }
    return json.dumps(spec, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per stage")
    parser.add_argument("--jax", action="store_true", help="also the jax backend, one at a time and seed-batched")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
    csv = REAL_CSV
    if not csv.exists():
        run_timed([sys.executable, "-m", "harness", "data", "synth", "--out", str(tmp), "--n", "1537"], tmp)
        csv = tmp / "train.csv"
    naive_uri = f"sqlite:///{tmp / 'naive.db'}"
    naive_script = str(REPO / "benchmarks" / "naive_train.py")

    def naive(seeds: range) -> list[float]:
        return [run_timed([sys.executable, naive_script, "--csv", str(csv), "--seed", str(seed), "--epochs",
                           str(args.epochs), "--stretched-epochs", str(args.epochs), "--tracking-uri", naive_uri],
                          tmp) for seed in seeds]

    def harness(label: str, workers: int, op_determinism: bool, backend: str = "tensorflow",
                batch_seeds: int = 1) -> tuple[float, list[float]]:
        """Seconds of the whole `harness run`, and each training's seconds; prints the cores a training used."""
        folder = tmp / label
        folder.mkdir()
        (folder / "study.yaml").write_text(study("study", csv, args.seeds, args.epochs, op_determinism, backend,
                                                 batch_seeds))
        started = time.perf_counter()
        run_timed([sys.executable, "-m", "harness", "run", "study.yaml", "--workers", str(workers),
                   "--no-progress"], folder)
        seconds = time.perf_counter() - started
        runs = finished_trainings(folder, "study")
        assert len(runs) == args.seeds, f"{label}: {len(runs)} of {args.seeds} finished"
        print(f"  ({label}: {seconds:.1f} s; one training kept {cores_per_training(folder, 'study'):.2f} cores busy)")
        return seconds, [r.data.metrics["wall_time_s"] for r in runs]

    print(f"study: {args.seeds} seeds, {args.epochs}+{args.epochs} epochs, data {csv}")
    half = args.seeds // 2
    naive_times = naive(range(half))
    one, one_runs = harness("workers1", 1, True)
    two, _ = harness("workers2", 2, True)
    free, free_runs = harness("nondeterministic", 1, False)
    jax_one, _ = harness("jax", 1, True, "jax") if args.jax else (0.0, [])
    jax_batched, _ = harness("jax-batched", 1, True, "jax", args.seeds) if args.jax else (0.0, [])
    naive_times += naive(range(half, args.seeds))
    naive_s = sum(naive_times)
    print(f"  naive, one process per training: {naive_s:.1f} s (median process {median(naive_times):.2f} s)")
    print(f"  harness, 1 worker: {one:.1f} s (median training {median(one_runs):.2f} s)")
    print(f"  harness, 2 workers: {two:.1f} s")
    print(f"  harness, 1 worker, op determinism off: {free:.1f} s (median training {median(free_runs):.2f} s)")
    result("study.one_worker_over_naive", naive_s / one, ">= 2", "trainings per hour, harness 1 worker / naive")
    result("study.two_workers_over_naive", naive_s / two, ">= 2", "trainings per hour, harness 2 workers / naive")
    result("study.determinism_cost", median(one_runs) / median(free_runs), "",
           "seconds per training, op determinism on / off")
    if args.jax:
        print(f"  harness, jax backend, 1 worker, one at a time: {jax_one:.1f} s")
        print(f"  harness, jax backend, 1 worker, seed-batched (K={args.seeds}): {jax_batched:.1f} s")
        result("study.seed_batched_over_one_at_a_time", jax_one / jax_batched, ">= 8 on a GPU",
               f"trainings per hour, jax K={args.seeds} batch / jax one at a time")
        result("study.seed_batched_over_naive", naive_s / jax_batched, ">= 2",
               "trainings per hour, harness jax seed-batched / naive")


if __name__ == "__main__":
    main()
