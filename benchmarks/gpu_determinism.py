"""Run a study's trainings on whatever accelerator this machine has, without MLflow or Optuna, into a runs table.

For machines that lack the tracking stack (a lent GPU box with jax/torch but no TensorFlow): it plans the study
with the harness's own design, trains each run with `harness.train.train_run` in one process per process group
(backend, determinism switches), and writes `runs.csv` plus per-run predictions, which
`python -m harness report --runs runs.csv` analyses like any other study.

    python benchmarks/gpu_determinism.py studies/determinism.yaml --backend jax --out OUT_DIR
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from harness.study import pipeline
from harness.study.design import plan_runs, process_key
from harness.study.spec import load_spec
from harness.training.sources import load_study_data


def train_group(spec_path: str, backend: str, group: tuple, keys: list[str], out_dir: str) -> list[dict]:
    """One process: configure backend and determinism, then train this group's runs in order."""
    from harness import env
    from harness.training import determinism, preprocess

    determinism.configure_group((backend, *group[1:]))
    from harness.training.train import train_run

    spec = with_backend(load_spec(spec_path), backend)
    study_data = load_study_data(spec.data)
    runs = {run.run_key: run for run in plan_runs(spec, study_data.fingerprint)}
    cache: dict[str, object] = {}

    def images_for(stage):
        key = pipeline.pipeline_key(stage.steps)
        if key not in cache:
            cache[key] = preprocess.apply_pipeline(study_data.images, stage.steps)
        return cache[key]

    snapshot, rows = env.snapshot(), []
    for key in keys:
        run = runs[key]
        result = train_run(run, study_data.ids, study_data.digits, images_for)
        predictions = ""
        if result.predictions is not None:
            predictions = f"predictions/{key}.csv"
            result.predictions.to_csv(Path(out_dir) / predictions, index=False)
        rows.append(
            {
                "run_key": key,
                "config_key": run.config_key,
                "status": result.status,
                "failure_reason": result.failure_reason,
                "accuracy": result.accuracy,
                "loss": result.loss,
                "weights_hash": result.weights_hash,
                "wall_time_s": result.wall_time_s,
                "replicate": run.replicate,
                "predictions": predictions,
                **run.factors,
                "param.devices": snapshot["devices"],
                "param.backend_version": snapshot["backend_version"],
            }
        )
        print(f"{run.name}: {result.status} acc={result.accuracy:.4f} {result.wall_time_s:.1f}s", flush=True)
    return rows


def with_backend(spec, backend: str):
    return spec.model_copy(update={"base": spec.base.model_copy(update={"backend": backend})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--backend", default="jax", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    (args.out / "predictions").mkdir(parents=True, exist_ok=True)
    spec = with_backend(load_spec(args.spec), args.backend)
    runs = plan_runs(spec, load_study_data(spec.data).fingerprint)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for run in runs:
        groups[process_key(run)].append(run.run_key)
    rows, started = [], time.perf_counter()
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for group, keys in groups.items():
            rows += pool.apply(train_group, (str(args.spec), args.backend, group, keys, str(args.out)))
            pd.DataFrame(rows).to_csv(args.out / "runs.csv", index=False)  # a group at a time: partial results count
    print(f"{len(rows)} runs in {time.perf_counter() - started:.0f} s -> {args.out / 'runs.csv'}")


if __name__ == "__main__":
    main()
