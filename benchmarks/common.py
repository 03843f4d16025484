"""Helpers shared by the benchmark scripts: side-by-side timing, study specs, subprocess runs, result lines.

Every benchmark measures the variants it compares in the same run, interleaved (A B B A ...), and reports the
ratio of medians, so load from other work on the machine hits both variants alike. Each script prints lines
`RESULT <name> = <value>` that `run_all.py` collects.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def quiet_tensorflow() -> None:
    """Silence TF's C++ log lines; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def quiet_tf_logger() -> None:
    """Hide TF's Python warnings (retracing notes from building one model after another); TF must be importable."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each variant, run in ABBA order (reversed every other round) after one warm-up each."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def describe(times: dict[str, list[float]], unit: str = "s") -> str:
    return ", ".join(
        f"{name}: median {median(v):.3g} {unit} ({' '.join(f'{x:.3g}' for x in v)})" for name, v in times.items()
    )


def result(name: str, value: float, target: str = "", note: str = "") -> None:
    """One machine-readable line: `RESULT name = value  [target ...] note`."""
    extra = f"  [target {target}]" if target else ""
    print(f"RESULT {name} = {value:.3f}{extra}{'  ' + note if note else ''}", flush=True)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run_timed(args: list[str], cwd: Path, **extra_env: str) -> float:
    """Wall seconds of a subprocess; raises with its stderr tail if it fails."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=subprocess_env(**extra_env), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def python_json(args: list[str], cwd: Path | None = None, **extra_env: str) -> Any:
    """Run `python ARGS` and parse the last stdout line as JSON (how child benchmark processes report)."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=subprocess_env(**extra_env), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def study_spec(
    name: str,
    *,
    n: int,
    epochs: int,
    repeats: int,
    pipeline: list[Any] | None = None,
    determinism: dict[str, Any] | None = None,
    factors: dict[str, list[Any]] | None = None,
    data: dict[str, Any] | None = None,
) -> str:
    """A study spec (JSON is valid YAML): default model, batch 64, one stage of `epochs` on `pipeline`."""
    spec = {
        "name": name,
        "data": data or {"source": "synthetic", "n": n, "seed": 0},
        "repeats": repeats,
        "base": {
            "determinism": determinism or {},
            "stages": {"train": {"pipeline": pipeline or [], "epochs": epochs}},
        },
        "factors": factors or {},
    }
    return json.dumps(spec, indent=1)


def harness_run(spec_text: str, workdir: Path, workers: int = 1) -> tuple[float, Path]:
    """Wall seconds of `python -m harness run SPEC` in a fresh folder under `workdir` (own stores and cache)."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    (folder / "study.yaml").write_text(spec_text)
    args = [sys.executable, "-m", "harness", "run", "study.yaml", "--workers", str(workers), "--no-progress"]
    return run_timed(args, folder), folder


def finished_trainings(folder: Path, experiment: str) -> list[Any]:
    """The FINISHED training runs of a study folder's MLflow store (`mlruns/mlflow.db` under `folder`)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlruns' / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`harness.role` = 'training'", max_results=10_000)
    return [r for r in runs if r.info.status == "FINISHED"]


def finished_wall_times(folder: Path, experiment: str) -> list[float]:
    """`wall_time_s` (what `train_run` took) of every FINISHED training in a study folder's store."""
    return [r.data.metrics["wall_time_s"] for r in finished_trainings(folder, experiment)]


def cores_per_training(folder: Path, experiment: str) -> float:
    """Median over a study folder's FINISHED trainings of `cpu_time_s` / `wall_time_s`: the cores one training
    kept busy (its worker process's CPU time, every thread)."""
    return median([r.data.metrics["cpu_time_s"] / r.data.metrics["wall_time_s"]
                   for r in finished_trainings(folder, experiment)])


def training_span(folder: Path, experiment: str) -> float:
    """Seconds from the first training's start to the last one's end: the study without process start-up."""
    runs = finished_trainings(folder, experiment)
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000.0


def cnn_flops_per_example(model: Any) -> float:
    """Forward FLOPs of one example: 2 × multiply-adds of every Conv2D and Dense layer (the rest is noise)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1]
            total += 2.0 * height * width * out_channels * kh * kw * in_channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def peak_flops() -> dict[str, float]:
    """FLOP/s of a float32 2048×2048 matmul (2·2048³ FLOPs a call, median of 5) by numpy and by tf.matmul."""
    import numpy as np
    import tensorflow as tf

    size = 2048
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    ta = tf.constant(a)
    flops = 2.0 * size**3
    out = {}
    for name, call in (("numpy", lambda: a @ a), ("tf", lambda: tf.matmul(ta, ta).numpy())):
        call()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        out[name] = flops / median(times)
    return out
