"""Seed batching's bound on this machine: one K-lane train step against one single-lane step, same model.

`execution.batch_seeds: K` trains K runs of one configuration in one jitted, vmapped step
(harness/training/seed_batch.py). This times that step, steady state, for K lanes and for 1 lane (the default
CNN, 28 px, batch 64, jax), alternating K and 1 (1 K 1 K …) so load hits both; throughput ratio = K × (1-lane
step seconds) / (K-lane step seconds): ≥ 1 means seed batching trains more runs per hour than one at a time
(issue 17 asks ≥ 8 at K = 8 on a GPU). On a CPU, where one training already keeps the cores busy, the ratio is
at most about 1, and `jax.vmap` turns every convolution with per-lane kernels into a grouped convolution, which
is what this measures; it also times one such grouped convolution against K plain ones.

    python benchmarks/bench_seed_batch.py [--lanes 6] [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # before anything imports Keras

from common import median, quiet_tensorflow, result  # noqa: E402


def spec_text(lanes: int) -> str:
    return json.dumps({
        "name": "seed-batch-step",
        "data": {"source": "synthetic", "n": 1600, "seed": 3},
        "repeats": lanes,
        "base": {"backend": "jax", "execution": {"batch_seeds": lanes},
                 "stages": {"train": {"pipeline": [], "epochs": 1}}},
    })


def step_seconds(lanes: int, steps: int, folder: Path) -> float:
    """Seconds of one steady-state train step of a `lanes`-lane batch (after one compiling step)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from harness.execution.prepared import prepare
    from harness.study.spec import parse_spec
    from harness.training.seed_batch import Batch
    from harness.training.user_model import model_inputs

    study = prepare(parse_spec(spec_text(lanes), folder / f"k{lanes}.yaml"))
    images_for = partial(study.data.images_for, cache_dir=folder / "cache")
    batch = Batch(study.runs, study.data.digits, images_for, {}, 10)
    images = images_for(study.runs[0].stages[0])
    inputs = jax.tree.map(jnp.asarray, model_inputs(batch.models[0], images, {}))
    labels = jnp.asarray(study.data.digits)
    rows = jnp.asarray(np.stack([np.arange(64)] * lanes))
    state = batch.state

    def step(state: tuple) -> tuple:
        trainable, non_trainable, optimizer, loss, _ = batch.train_step(*state, rows, inputs, labels)
        loss.block_until_ready()
        return trainable, non_trainable, optimizer

    state = step((state.trainable, state.non_trainable, state.optimizer))  # compiles
    started = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    return (time.perf_counter() - started) / steps


def grouped_over_plain(lanes: int, repeats: int = 20) -> float:
    """Seconds of one 3×3 16→32 convolution at 28 px, batch 64, grouped over `lanes` lanes (what vmap makes of
    per-lane kernels) / seconds of `lanes` plain ones."""
    import jax
    import jax.numpy as jnp

    numbers = ("NHWC", "HWIO", "NHWC")
    grouped = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=numbers,
                                                                 feature_group_count=lanes))
    plain = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=numbers))

    def seconds(call: object, *operands: object) -> float:
        call(*operands).block_until_ready()
        started = time.perf_counter()
        for _ in range(repeats):
            call(*operands).block_until_ready()
        return (time.perf_counter() - started) / repeats

    many = seconds(grouped, jnp.ones((64, 28, 28, lanes * 16)), jnp.ones((3, 3, 16, lanes * 32)))
    return many / (lanes * seconds(plain, jnp.ones((64, 28, 28, 16)), jnp.ones((3, 3, 16, 32))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    quiet_tensorflow()
    import jax

    folder = Path(tempfile.mkdtemp(prefix="bench-seed-batch-"))
    times: dict[int, list[float]] = {1: [], args.lanes: []}
    for _ in range(args.rounds):
        for lanes in (1, args.lanes):
            times[lanes].append(step_seconds(lanes, args.steps, folder))
    one, many = median(times[1]), median(times[args.lanes])
    print(f"seed batch step on {jax.devices()[0].device_kind}: 1 lane {1000 * one:.1f} ms, "
          f"{args.lanes} lanes {1000 * many:.1f} ms ({many / one:.1f}x the time for {args.lanes}x the work)")
    conv = grouped_over_plain(args.lanes)
    print(f"  one grouped convolution over {args.lanes} lanes takes {conv:.1f}x the time of {args.lanes} plain ones")
    result("seed_batch.grouped_conv_over_plain", conv, note="the kernel vmap makes of per-lane convolutions")
    result("seed_batch.step_throughput_ratio", args.lanes * one / many, ">= 8 on a GPU at K = 8",
           f"runs per hour, {args.lanes}-lane steps / 1-lane steps, {jax.devices()[0].platform}")


if __name__ == "__main__":
    main()
