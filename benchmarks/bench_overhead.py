"""Per-run overhead: one training through the harness's own path vs a bare Keras `fit`, same process.

Harness path: a planned run → preprocessing cache hit → `harness.train.train_run` → `tracking.start_child` /
`finish_child` into a temporary SQLite MLflow store. Bare path: `build_cnn` + `compile` + `fit` on the same
arrays, split, batch size and epochs, plus `predict` on the validation set. Variants alternate (ABBA) after one
warm-up each; the ratio is harness median / bare median (target ≤ 1.05).

Also each path's whole-training FLOP/s as a fraction of this machine's matmul FLOP/s (issue 17's target: ≥ 0.6):
FLOPs of a training = 3 × forward FLOPs × training examples × epochs + forward FLOPs × validation examples ×
(epochs + 1: every epoch's validation and the final predictions), over the median seconds of a whole training.
The harness path reuses the compiled model from its second training on (`determinism.actual.model` = reused);
the bare path, like a notebook run, builds and traces a new one every time.

    python benchmarks/bench_overhead.py [--n 1500] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import (
    cnn_flops_per_example,
    describe,
    interleaved,
    median,
    peak_flops,
    quiet_tensorflow,
    quiet_tf_logger,
    result,
    study_spec,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_tensorflow()

    from harness import env, tracking
    from harness.execution import prepared
    from harness.study.spec import parse_spec
    from harness.training import determinism, preprocess

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    spec = parse_spec(
        study_spec("overhead", n=args.n, epochs=args.epochs, repeats=args.repeats + 2), tmp / "study.yaml"
    )
    determinism.configure_process(spec.base.determinism)  # both variants run under the same process settings
    import keras
    import tensorflow as tf

    quiet_tf_logger()
    from harness.training.model import build_cnn
    from harness.training.train import split_indices, train_run

    study = prepared.prepare(spec)
    cache = tmp / "cache"
    client = tracking.connect(f"sqlite:///{tmp / 'mlflow.db'}")
    exp_id = tracking.experiment_id(client, spec.name)
    parent = tracking.study_parent(client, exp_id, spec.name, spec.source_text)
    environment = env.snapshot()
    data = study.data
    stage = study.runs[0].stages[0]
    preprocess.cached_pipeline(data.images, data.fingerprint, stage.steps, cache)  # the runner's warm-up

    def images_for(stage):
        return preprocess.cached_pipeline(data.images, data.fingerprint, stage.steps, cache)[0]

    runs = iter(study.runs)
    timings: dict[str, list[float]] = {"train_run": [], "logging": []}

    def harness_once() -> None:
        run = next(runs)
        started = time.perf_counter()
        run_id = tracking.start_child(client, exp_id, parent, run, environment, run.replicate)
        training = time.perf_counter()
        outcome = train_run(run, data.ids, data.digits, images_for)
        logging = time.perf_counter()
        tracking.finish_child(client, run_id, outcome)
        timings["train_run"].append(logging - training)
        timings["logging"].append(time.perf_counter() - logging + training - started)
        assert outcome.status == "FINISHED", outcome.failure_reason

    config = study.runs[0].config
    x = images_for(stage)[..., None]
    train_idx, val_idx = split_indices(data.digits, config.evaluation, 0)
    x_train, y_train, x_val, y_val = x[train_idx], data.digits[train_idx], x[val_idx], data.digits[val_idx]

    def bare_once() -> None:
        keras.backend.clear_session()
        model = build_cnn(x.shape[1], config.model, config.augmentation, study.runs[0].seeds)
        model.compile(
            optimizer=keras.optimizers.Adam(config.training.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(
            x_train,
            y_train,
            batch_size=config.training.batch_size,
            epochs=args.epochs,
            validation_data=(x_val, y_val),
            verbose=0,
        )
        model.predict(x_val, batch_size=512, verbose=0)

    print(f"overhead: {args.n} images, {args.epochs} epochs, batch {config.training.batch_size}, tf {tf.__version__}")
    times = interleaved({"harness": harness_once, "bare_keras": bare_once}, args.repeats)
    print(describe(times))
    logging = timings["logging"][1:]  # without the warm-up
    print(f"  of which MLflow logging (start_child + finish_child): median {median(logging):.3f} s")
    forward = cnn_flops_per_example(build_cnn(x.shape[1], config.model, config.augmentation, study.runs[0].seeds))
    training_flops = forward * (3 * len(train_idx) * args.epochs + len(val_idx) * (args.epochs + 1))
    peak = max(peak_flops().values())
    fractions = {name: training_flops / median(seconds) / peak for name, seconds in times.items()}
    print(f"  whole training: {training_flops / 1e9:.0f} GFLOP; matmul peak {peak / 1e9:.0f} GFLOP/s; "
          + ", ".join(f"{name} {100 * fraction:.1f}% of peak" for name, fraction in fractions.items()))
    result("overhead.harness_over_bare", median(times["harness"]) / median(times["bare_keras"]), "<= 1.05")
    result("overhead.logging_s", median(logging), note="seconds per run spent in start_child + finish_child")
    result("overhead.harness_training_fraction_of_peak", fractions["harness"], ">= 0.6",
           "whole-training FLOP/s of the default CNN through the harness / matmul FLOP/s")
    result("overhead.bare_training_fraction_of_peak", fractions["bare_keras"], note="the same for a bare Keras fit")


if __name__ == "__main__":
    main()
