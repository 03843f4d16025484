"""`harness data synth` and `harness preview`: the built-in data set as files, and what preprocessing does to it."""

from __future__ import annotations

import argparse
from pathlib import Path


def synth(args: argparse.Namespace) -> int:
    from harness.training.synthetic import export_synthetic

    for path in export_synthetic(args.out, args.n, args.n_test, args.seed):
        print(path)
    return 0


def preview(args: argparse.Namespace) -> int:
    from harness.execution.prepared import prepare
    from harness.study.pipeline import pipeline_key
    from harness.study.spec import load_spec
    from harness.training.preprocess import preview_grid

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
