"""`harness data synth|digits` and `harness preview`: data sets as files, and what preprocessing does to them."""

from __future__ import annotations

import argparse
from pathlib import Path


def synth(args: argparse.Namespace) -> int:
    from harness.training.synthetic import export_synthetic

    for path in export_synthetic(args.out, args.n, args.n_test, args.seed):
        print(path)
    return 0


def digits(args: argparse.Namespace) -> int:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download) as OUT/<digit>/<index>.png, 0..255 grey."""
    import cv2
    import numpy as np
    from sklearn.datasets import load_digits

    from harness.errors import HarnessError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out}: is a file; allowed: a folder (new or existing) for the class folders")
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # the set's grey levels are 0..16
    for index, (image, label) in enumerate(zip(images, bunch.target, strict=True)):
        path = out / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image):
            raise HarnessError(f"{path}: cannot write the image")
    print(f"{out}: {len(images)} images in {len(set(bunch.target))} class folders")
    return 0


def preview(args: argparse.Namespace) -> int:
    from harness.commands.common import positive
    from harness.execution.prepared import prepare
    from harness.study.pipeline import pipeline_key
    from harness.study.spec import load_spec
    from harness.training.preprocess import preview_grid

    positive(args.samples, "--samples")
    spec = load_spec(args.spec)
    study = prepare(spec)
    out_dir = args.out or Path("reports") / spec.name / "preview"
    written = {}
    for run in study.runs:
        for stage in run.stages:
            key = pipeline_key(stage.steps)
            if key not in written:
                written[key] = preview_grid(study.data.images, stage.steps, out_dir / f"{stage.name}-{key[:8]}.png",
                                            n_samples=args.samples, labels=study.data.digits)
    for path in written.values():
        print(path)
    return 0
