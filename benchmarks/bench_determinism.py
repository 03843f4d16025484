"""Determinism cost: seconds per training with `determinism.op_determinism` on vs off, same config.

TensorFlow fixes op determinism per process, so each setting runs in its own child process (the harness's
worker path: `determinism.configure_process`, then `train_run` on planned runs with a preprocessing cache hit);
children run in ABBA order, each timing `--trainings` trainings after one warm-up training. Reports the ratio
on / off of the median training time.

    python benchmarks/bench_determinism.py [--n 1000] [--epochs 5] [--trainings 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import describe, median, python_json, quiet_tensorflow, quiet_tf_logger, result, study_spec


def child(n: int, epochs: int, trainings: int, op_determinism: bool) -> None:
    quiet_tensorflow()
    from harness.execution import prepared
    from harness.study.spec import parse_spec
    from harness.training import determinism, preprocess

    tmp = Path(tempfile.mkdtemp(prefix="bench-determinism-"))
    settings = {"op_determinism": op_determinism, "env_flags": op_determinism}
    text = study_spec("det", n=n, epochs=epochs, repeats=trainings + 1, determinism=settings)
    study = prepared.prepare(parse_spec(text, tmp / "study.yaml"))
    determinism.configure_process(study.runs[0].config.determinism)
    quiet_tf_logger()
    from harness.training.train import train_run

    def images_for(stage):
        return preprocess.cached_pipeline(study.data.images, study.data.fingerprint, stage.steps, tmp)[0]

    times = []
    for run in study.runs:  # the first is the warm-up
        started = time.perf_counter()
        outcome = train_run(run, study.data.ids, study.data.digits, images_for)
        times.append(time.perf_counter() - started)
        assert outcome.status == "FINISHED", outcome.failure_reason
    print(json.dumps({"times": times[1:], "actual": outcome.determinism}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trainings", type=int, default=2, help="timed trainings per child process")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of child processes")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.n, args.epochs, args.trainings, args.child == "on")
        return
    times: dict[str, list[float]] = {"on": [], "off": []}
    common = [__file__, "--n", str(args.n), "--epochs", str(args.epochs), "--trainings", str(args.trainings)]
    for round_index in range(args.rounds):
        for setting in ("on", "off") if round_index % 2 == 0 else ("off", "on"):
            report = python_json([*common, "--child", setting])
            assert report["actual"]["op_determinism"] == (setting == "on"), report["actual"]
            times[setting] += report["times"]
    print(f"determinism: {args.n} images, {args.epochs} epochs; op_determinism (and env flags) on vs off")
    print("  " + describe(times))
    result("determinism.on_over_off", median(times["on"]) / median(times["off"]), note="seconds per training")


if __name__ == "__main__":
    main()
