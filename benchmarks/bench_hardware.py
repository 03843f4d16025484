"""Hardware efficiency: achieved training FLOP/s of the default CNN as a fraction of this machine's matmul FLOP/s.

FLOPs per training example = 3 × forward (2 × multiply-adds of every Conv2D and Dense layer, 28 px, default
model). Peak = the better of numpy and tf.matmul float32 2048×2048 (2·2048³ FLOPs a call, median of 5). Achieved =
examples/s of steady-state epochs (the first, tracing epoch is dropped) × FLOPs per example. Variants that TF allows
in one process (input path, batch size, `jit_compile`) run interleaved inside a child process; what TF fixes per
process (intra-op threads, op determinism) gets its own child, and the children run in ABC CBA order.

    python benchmarks/bench_hardware.py [--n 1200] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import cnn_flops_per_example, median, peak_flops, python_json, quiet_tensorflow, quiet_tf_logger, result

# (name, batch size, input path, jit_compile); "harness" is train.py's tf.data shuffle → batch → prefetch
VARIANTS = [
    ("b64_harness_tfdata", 64, "tfdata", False),
    ("b64_numpy", 64, "numpy", False),
    ("b64_numpy_xla", 64, "numpy", True),
    ("b256_numpy", 256, "numpy", False),
    ("b256_numpy_xla", 256, "numpy", True),
]
# (name, intra_op_threads, op_determinism): process-level settings
PROCESSES = [("intra2_det_on", 2, True), ("intra2_det_off", 2, False), ("intra1_det_off", 1, False)]


def child(n: int, epochs: int, intra: int, op_determinism: bool, repeats: int) -> None:
    """Examples/s of each variant (median over repeats of the steady-state epochs); prints one JSON line."""
    quiet_tensorflow()
    from harness.study.spec import AugmentationConfig, DeterminismConfig, ModelConfig
    from harness.training import determinism, synthetic

    determinism.configure_process(DeterminismConfig(op_determinism=op_determinism, intra_op_threads=intra))
    import keras
    import numpy as np
    import tensorflow as tf

    quiet_tf_logger()
    from harness.training.model import build_cnn

    dataset = synthetic.synthesize(n, 0)
    x, y = (dataset.images.astype(np.float32) / 255.0)[..., None], dataset.digits
    seeds = dict.fromkeys(("init", "order", "augment", "dropout", "split"), 0)
    flops = 3 * cnn_flops_per_example(build_cnn(28, ModelConfig(), AugmentationConfig(), seeds))

    def run(batch: int, source: str, jit: bool) -> float:
        determinism.seed_run()  # clear_session + global seed (op determinism refuses unseeded random ops)
        model = build_cnn(28, ModelConfig(), AugmentationConfig(), seeds)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], jit_compile=jit)
        ends: list[float] = [time.perf_counter()]
        clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: ends.append(time.perf_counter()))
        if source == "tfdata":
            inputs = (
                tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0).batch(batch).prefetch(tf.data.AUTOTUNE)
            )
            model.fit(inputs, epochs=epochs, callbacks=[clock], verbose=0)
        else:
            model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[clock], verbose=0)
        steady = median([b - a for a, b in zip(ends[1:-1], ends[2:], strict=True)])
        first_epoch_extra[0] += (ends[1] - ends[0] - steady) / len(VARIANTS) / repeats
        return n / steady

    rates: dict[str, list[float]] = {name: [] for name, *_ in VARIANTS}
    first_epoch_extra = [0.0]  # mean seconds the first epoch takes beyond a steady one (tracing, graph building)
    for round_index in range(repeats):
        for name, batch, source, jit in VARIANTS if round_index % 2 == 0 else reversed(VARIANTS):
            rates[name].append(run(batch, source, jit))
    rates_out = {k: median(v) for k, v in rates.items()}
    print(json.dumps({"flops_per_example": flops, "rates": rates_out, "first_epoch_extra_s": first_epoch_extra[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of variants inside each child")
    parser.add_argument("--child", nargs=2, metavar=("INTRA", "DETERMINISM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.n, args.epochs, int(args.child[0]), args.child[1] == "1", args.repeats)
        return

    quiet_tensorflow()
    peak = peak_flops()
    best_peak = max(peak.values())
    print("hardware: matmul 2048² float32 " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peak.items()))
    reports: dict[str, list[dict]] = {name: [] for name, *_ in PROCESSES}
    for name, intra, det in [*PROCESSES, *reversed(PROCESSES)]:
        command = [__file__, "--n", str(args.n), "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
        reports[name].append(python_json([*command, "--child", str(intra), "1" if det else "0"]))
    flops = reports[PROCESSES[0][0]][0]["flops_per_example"]
    print(f"  default CNN at 28 px: {flops / 3 / 1e6:.2f} MFLOP forward, {flops / 1e6:.1f} MFLOP per training example")
    fractions: dict[str, float] = {}
    for process, runs in reports.items():
        for variant, *_ in VARIANTS:
            rate = median([r["rates"][variant] for r in runs])
            fractions[f"{process}.{variant}"] = rate * flops / best_peak
            print(
                f"  {process:15s} {variant:20s} {rate:7.0f} examples/s  {rate * flops / 1e9:6.2f} GFLOP/s  "
                f"{100 * rate * flops / best_peak:5.1f}% of peak"
            )
    extra = median([r["first_epoch_extra_s"] for runs in reports.values() for r in runs])
    print(f"  first epoch of a fit takes {extra:.2f} s more than a steady one (tracing; paid once per training)")
    harness_default = fractions["intra2_det_on.b64_harness_tfdata"]
    best = max(fractions, key=fractions.get)
    result("hardware.peak_matmul_gflops", best_peak / 1e9)
    result("hardware.harness_default_fraction_of_peak", harness_default, note="batch 64, tf.data, op determinism on")
    result("hardware.best_variant_fraction_of_peak", fractions[best], note=best)
    result("hardware.best_over_harness_default", fractions[best] / harness_default)


if __name__ == "__main__":
    sys.exit(main())
