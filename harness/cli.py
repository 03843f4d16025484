"""Command line: `python -m harness {run,report,export,preview,data} ...`.

Every bad input ends as one line on stderr and exit code 2, with no traceback. Heavy libraries load inside
the commands, so a bad spec is refused in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; run the same command again to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train every run of a study spec and log it to MLflow")
    run.add_argument("spec", type=Path, help="study YAML, e.g. studies/quick.yaml")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(handler=_cmd_run)

    preview = commands.add_parser("preview", help="PNG grid of the same samples after each preprocessing step")
    preview.add_argument("spec", type=Path)
    preview.add_argument("--out", type=Path, help="output folder (default: reports/STUDY/preview)")
    preview.add_argument("--samples", type=int, default=8)
    preview.set_defaults(handler=_cmd_preview)

    data_cmd = commands.add_parser("data", help="data utilities")
    data_sub = data_cmd.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_sub.add_parser("synth", help="write the embedded synthetic data set as contest CSVs")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n", type=int, default=2048, help="training images (default 2048, the contest's)")
    synth.add_argument("--n-test", type=int, default=0, help="test images without labels (default 0)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_cmd_synth)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from harness import runner, stats, tracking
    from harness.runs_table import factor_columns
    from harness.spec import load_spec

    spec = load_spec(args.spec)
    study = runner.prepare(spec)
    client = tracking.connect(args.tracking_uri or spec.tracking.uri)
    print(
        f"study '{spec.name}': {len(study.runs)} runs on {study.data.images.shape[0]} images "
        f"(data {study.data.fingerprint})",
        file=sys.stderr,
    )
    table = runner.run_study(study, client, progress=not args.no_progress)
    finished = table[table["status"] == "FINISHED"] if not table.empty else table
    print(
        f"\n{len(finished)}/{len(study.runs)} runs finished; mean training time {finished['wall_time_s'].mean():.1f} s"
        if len(finished)
        else "no finished runs"
    )
    varying = [f for f in factor_columns(table) if table[f].nunique() > 1] if not table.empty else []
    if len(finished):
        print(stats.quick_summary(table, varying))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from harness import preprocess, runner
    from harness.spec import load_spec

    spec = load_spec(args.spec)
    study = runner.prepare(spec)
    out_dir = args.out or Path("reports") / spec.name / "preview"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for run in study.runs:
        for stage in run.stages:
            key = preprocess.pipeline_key(stage.steps)
            if key in written:
                continue
            path = out_dir / f"{stage.name}-{key[:8]}.png"
            preprocess.preview_grid(
                study.data.images, stage.steps, path, n_samples=args.samples, labels=study.data.digits
            )
            written[key] = path
    for path in written.values():
        print(path)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from harness import data

    for path in data.export_synthetic(args.out, args.n, args.n_test, args.seed):
        print(path)
    return 0
