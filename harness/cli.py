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
    run.add_argument("--storage", help="Optuna run storage URL (default: sqlite:///mlruns/optuna.db)")
    run.add_argument("--workers", type=int, default=1, help="local training processes (default 1)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(handler=_cmd_run)

    worker = commands.add_parser("worker", help="join a running study from this machine and train its trials")
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument("--storage", required=True, help="the study's run storage URL, e.g. postgresql://...")
    worker.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the study was started with)")
    worker.add_argument("--workers", type=int, default=1)
    worker.add_argument("--no-progress", action="store_true")
    worker.set_defaults(handler=_cmd_worker)

    status = commands.add_parser("status", help="done / running / waiting / failed trainings and ETA")
    status.add_argument("study", help="study spec file or study name")
    status.add_argument("--storage", help="run storage URL (default: sqlite:///mlruns/optuna.db)")
    status.set_defaults(handler=_cmd_status)

    tune = commands.add_parser("tune", help="Optuna search over a spec's `search` space, then a seed-robust re-check")
    tune.add_argument("spec", type=Path, help="study YAML with a `search` section, e.g. studies/tune.yaml")
    tune.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite:///mlruns/optuna.db)")
    tune.add_argument("--workers", type=int, default=1, help="local training processes (default 1)")
    tune.add_argument("--out", type=Path, help="folder for tune.md/tune.json (default: reports/STUDY)")
    tune.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    tune.set_defaults(handler=_cmd_tune)

    predict = commands.add_parser("predict", help="contest submission (id,digit) from a study's chosen config")
    predict.add_argument("--study", required=True, help="study name in the MLflow store (a tune or run study)")
    predict.add_argument("--data", type=Path, required=True, help="contest-format CSV (test or labelled train)")
    predict.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    predict.add_argument("--ensemble", type=int, default=1, help="average the softmax of K seeds (default 1)")
    predict.add_argument("--tracking-uri")
    predict.set_defaults(handler=_cmd_predict)

    doctor = commands.add_parser("doctor", help="versions, devices, why no GPU, determinism, store reachability")
    doctor.add_argument("--study", type=Path, help="also check this study's requirements (exit 2 when unmet)")
    doctor.add_argument("--backend", action="append", choices=["tensorflow", "jax", "torch"],
                        help="backend to inspect (repeatable; default: the study's, else tensorflow)")
    doctor.add_argument("--tracking-uri", help="MLflow tracking URI to check (default: the study's or ./mlruns)")
    doctor.add_argument("--storage", help="Optuna storage URL to check (default: sqlite:///mlruns/optuna.db)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_cmd_doctor)

    report = commands.add_parser("report", help="statistical report: why does accuracy differ?")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("study", nargs="?", help="study spec file or study name in the MLflow store")
    source.add_argument("--runs", type=Path, help="a runs table CSV instead (see docs/runs-table.md)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    report.add_argument("--out", type=Path, help="report folder (default: reports/STUDY)")
    report.add_argument("--delta-pp", type=float, default=1.0, help="difference to detect, in pp (default 1)")
    report.set_defaults(handler=_cmd_report)

    export = commands.add_parser("export", help="write a study's runs table (CSV) from MLflow")
    export.add_argument("study", help="study spec file or study name")
    export.add_argument("--out", type=Path, required=True, help="CSV path; predictions go beside it")
    export.add_argument("--tracking-uri")
    export.set_defaults(handler=_cmd_export)

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
    from harness.spec import load_spec

    spec = load_spec(args.spec)  # refuse a bad spec before pandas, OpenCV and scipy load
    from harness import engine, runner, stats, tracking
    from harness.runs_table import factor_columns

    study = runner.prepare(spec)
    runner.apply_device(spec)
    client = tracking.connect(args.tracking_uri or spec.tracking.uri)
    storage = engine.open_storage(args.storage)
    print(
        f"study '{spec.name}': {len(study.runs)} runs on {study.data.images.shape[0]} images "
        f"(data {study.data.fingerprint})",
        file=sys.stderr,
    )
    table = runner.run_study(study, client, storage, _workers(args.workers), progress=not args.no_progress)
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


def _workers(count: int) -> int:
    if count < 1:
        raise HarnessError(f"--workers: got {count}; allowed: 1 or more")
    return count


def _cmd_worker(args: argparse.Namespace) -> int:
    from harness import engine, runner, tracking
    from harness.spec import parse_spec

    workers = _workers(args.workers)
    queue = engine.open_queue(engine.open_storage(args.storage), args.study, create=False)
    client = tracking.connect(args.tracking_uri or queue.user_attrs.get("tracking_uri"))
    runner.apply_device(parse_spec(queue.user_attrs["spec_text"], Path(queue.user_attrs["spec_path"])))
    runner.drain(queue, args.storage, client, workers, progress=not args.no_progress)
    print(_status_line(engine.status(queue)))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from harness import engine

    name = args.study
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        from harness.spec import load_spec

        name = load_spec(name).name
    queue = engine.open_queue(engine.open_storage(args.storage), name, create=False)
    print(f"{name}: {_status_line(engine.status(queue))}")
    return 0


def _status_line(counts: dict) -> str:
    eta = counts["eta_s"]
    eta_text = "unknown" if eta is None else f"{eta / 60:.1f} min"
    return (
        f"{counts['done']} done, {counts['running']} running, {counts['waiting']} waiting, "
        + (f"{counts['pruned']} pruned, " if counts["pruned"] else "")
        + f"{counts['failed']} failed, {counts['killed_retried']} killed (retried); ETA {eta_text}"
    )


def _cmd_tune(args: argparse.Namespace) -> int:
    from harness.spec import load_spec

    spec = load_spec(args.spec)
    from harness import engine, runner, tracking, tune

    tune.check_search(spec)
    study = runner.prepare(spec)
    runner.apply_device(spec)
    client = tracking.connect(args.tracking_uri or spec.tracking.uri)
    storage = engine.open_storage(args.storage)
    out = args.out or Path("reports") / spec.name
    result = tune.tune(study, client, storage, _workers(args.workers), not args.no_progress, out)
    print("\n".join(result["verdict"]))
    print(f"tune report: {out / 'tune.md'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from harness import predict, tracking

    client = tracking.connect(args.tracking_uri)
    result = predict.predict(client, args.study, args.data, args.out, args.ensemble)
    trained = "loaded from MLflow" if result["reused_models"] else "trained"
    print(f"{result['rows']} predictions from {result['members']} model(s) ({trained}; config: "
          f"{result['config_from']}) written to {result['out']}")
    if result["accuracy"] is not None:
        print(f"accuracy on {args.data}: {100 * result['accuracy']:.2f}%")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from harness.spec import load_spec

    spec = load_spec(args.study) if args.study else None
    from harness import doctor

    backends = args.backend or (doctor.study_backends(spec) if spec else ["tensorflow"])
    report = doctor.diagnose(backends, args.tracking_uri or (spec.tracking.uri if spec else None), args.storage, spec)
    print(json.dumps(report, indent=2, default=str) if args.json else doctor.render(report))
    if report["problems"]:
        print(f"error: {report['problems'][0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from harness import report, runs_table, study_store

    if args.runs is not None:
        table = runs_table.load_runs_table(args.runs)
        out_dir = args.out or Path("reports") / args.runs.stem
        result = report.build_report(
            table, out_dir, table_dir=args.runs.resolve().parent, delta_pp=args.delta_pp, title=args.runs.name
        )
    else:
        stored = study_store.open_study(args.study, args.tracking_uri)
        out_dir = args.out or Path("reports") / stored.name
        table = stored.runs_table(out_dir / "predictions")
        if table.attrs.get("left_out"):
            print(f"{table.attrs['left_out']} run(s) of earlier versions of the spec left out (not planned by it)")
        result = report.build_report(
            table, out_dir, images=stored.images(), delta_pp=args.delta_pp, title=f"Study '{stored.name}'"
        )
        stored.attach_report(out_dir, table)
    print("\n".join(result["verdict"]))
    print(f"\nreport: {out_dir / 'report.md'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from harness import study_store

    stored = study_store.open_study(args.study, args.tracking_uri)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = stored.runs_table(args.out.parent / f"{args.out.stem}_predictions")
    if "predictions" in table:
        table["predictions"] = [
            str(Path(p).relative_to(args.out.parent.resolve())) if isinstance(p, str) and p else ""
            for p in table["predictions"]
        ]
    table.to_csv(args.out, index=False)
    print(f"{args.out}: {len(table)} runs")
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
