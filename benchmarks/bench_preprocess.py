"""Preprocessing: the contest notebook's pipeline (upscale ×3 → stretch → binarize → erode ×3) on 22,528 images.

Compares, interleaved in one process: `harness.preprocess.apply_pipeline`; a per-image Python loop calling the same
cv2 functions (resize, threshold, erode; stretch with the same formula per image). Then times
`cached_pipeline` cold (empty cache folder: compute + atomic write) and its second call (a hit), and reports the
hit as a fraction of the cold run (target ≤ 5%).

    python benchmarks/bench_preprocess.py [--n 22528] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import describe, interleaved, median, result

from harness.study import pipeline
from harness.training import preprocess, synthetic

NOTEBOOK = [{"upscale": {"factor": 3}}, "stretch", "binarize", {"erode": {"iterations": 3}}]


def python_loop(images: np.ndarray) -> np.ndarray:
    """The notebook's way: one image at a time through the same cv2 calls."""
    kernel = np.ones((2, 2), np.uint8)
    out = []
    for image in images:
        image = cv2.resize(image, (84, 84), interpolation=cv2.INTER_LINEAR)
        low, high = float(image.min()), float(image.max())
        if high > low:
            scaled = (image.astype(np.float64) - low) * (255.0 / (high - low))
            image = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        _, image = cv2.threshold(image, 135, 255, cv2.THRESH_BINARY)
        image = cv2.erode(image, kernel, iterations=3)
        out.append(image.astype(np.float32) / np.float32(255.0))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=22_528)  # the contest's train (2,048) + test (20,480) images
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    dataset = synthetic.synthesize(args.n, 0)
    images, fingerprint = dataset.images, dataset.fingerprint
    steps = pipeline.parse_pipeline(NOTEBOOK, "bench")
    reference = preprocess.apply_pipeline(images, steps)
    same_loop = np.array_equal(python_loop(images[:500]), reference[:500])
    print(f"preprocess: {args.n} images → {reference.shape[1]} px; python loop output identical: {same_loop}")

    per_step = {}
    current = images
    for step in steps:
        started = time.perf_counter()
        current = preprocess.apply_step(current, step)
        per_step[step.name] = time.perf_counter() - started
    print("  apply_pipeline per step: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in per_step.items()))

    times = interleaved(
        {
            "apply_pipeline": lambda: preprocess.apply_pipeline(images, steps),
            "python_loop": lambda: python_loop(images),
        },
        args.repeats,
        warmup=False,
    )
    print(describe(times))
    rate = {name: args.n / median(values) for name, values in times.items()}
    print("  images/s: " + ", ".join(f"{name} {value:.0f}" for name, value in rate.items()))

    cold, hit = [], []
    root = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    for _ in range(args.repeats):
        folder = Path(tempfile.mkdtemp(dir=root))
        started = time.perf_counter()
        _, was_hit = preprocess.cached_pipeline(images, fingerprint, steps, folder)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        _, was_hit_again = preprocess.cached_pipeline(images, fingerprint, steps, folder)
        hit.append(time.perf_counter() - started)
        assert not was_hit and was_hit_again
        shutil.rmtree(folder)
    print(describe({"cache_cold": cold, "cache_hit": hit}) + f"  ({reference.nbytes / 1e6:.0f} MB float32 entry)")

    result("preprocess.apply_pipeline_images_per_s", rate["apply_pipeline"])
    result("preprocess.python_loop_images_per_s", rate["python_loop"])
    result("preprocess.apply_over_loop_speed", rate["apply_pipeline"] / rate["python_loop"], note="> 1: harness faster")
    result("preprocess.cache_hit_over_cold", median(hit) / median(cold), "<= 0.05")


if __name__ == "__main__":
    main()
