"""`harness report` and `harness export`: a study's runs (from MLflow, or any team's runs table) → report / CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def report(args: argparse.Namespace) -> int:
    from harness.analysis import runs_table
    from harness.commands import stored
    from harness.report.build import build_report

    if args.runs is not None:
        table = runs_table.load_runs_table(args.runs)
        out_dir = args.out or Path("reports") / args.runs.stem
        result = build_report(table, out_dir, table_dir=args.runs.resolve().parent, delta_pp=args.delta_pp,
                              title=args.runs.name, alpha=args.alpha, resolution_pp=args.resolution_pp,
                              max_repeats=args.max_repeats or 30)
    else:
        study = stored.open_study(args.study, args.tracking_uri)
        out_dir = args.out or Path("reports") / study.name
        table = study.runs_table(out_dir / "predictions")
        if table.attrs.get("left_out"):
            print(f"{table.attrs['left_out']} run(s) of earlier versions of the spec left out (not planned by it)")
        resolution_pp, max_repeats = _sequential(args, study.spec)
        result = build_report(table, out_dir, images=study.images(), delta_pp=args.delta_pp,
                              title=f"Study '{study.name}'", alpha=args.alpha, resolution_pp=resolution_pp,
                              max_repeats=max_repeats)
        study.attach_report(out_dir, table)
    print("\n".join(result["verdict"]))
    print(f"\nreport: {out_dir / 'report.md'}")
    return 0


def _sequential(args: argparse.Namespace, spec: Any) -> tuple[float | None, int]:
    """Resolution and maximum for the sequential decision: the options, else the spec's sequential repeats."""
    plan = getattr(spec, "repeats", None) if spec is not None else None
    resolution = args.resolution_pp if args.resolution_pp is not None else getattr(plan, "resolution_pp", None)
    return resolution, args.max_repeats or getattr(plan, "max", None) or 30


def export(args: argparse.Namespace) -> int:
    from harness.commands import stored

    study = stored.open_study(args.study, args.tracking_uri)
    table = study.runs_table(args.out.parent / f"{args.out.stem}_predictions")
    stored.write_runs_csv(table, args.out)
    print(f"{args.out}: {len(table)} runs")
    return 0
