"""`harness run`, `harness worker`, `harness status`: train a study's runs, join one, or ask where it stands."""

from __future__ import annotations

import argparse
import sys

from harness.commands.common import open_training, spec_or_name, study_argument, worker_count
from harness.errors import HarnessError

EXIT_RUNS_FAILED = 1


def run(args: argparse.Namespace) -> int:
    from harness.study.spec import load_spec

    spec = load_spec(args.spec)  # refuse a bad spec before pandas, OpenCV and scipy load
    if spec.search is not None:
        raise HarnessError(f"{args.spec}: has a 'search' section: train it with `harness tune {args.spec}` "
                           "(a run study of the same name would share its queue)")
    from harness.execution import runner

    study, client, storage, count = open_training(spec, args)
    seq = spec.sequential
    runs = (f"up to {len(study.runs)} runs ({seq.min} to {seq.max} seeds per design point, in rounds until every "
            f"comparison is settled at ±{seq.resolution_pp:g} pp)" if seq else f"{len(study.runs)} runs")
    print(f"study '{spec.name}': {runs} on {study.data.images.shape[0]} images "
          f"(data {study.data.fingerprint}); store {client.tracking_uri}", file=sys.stderr)
    table = runner.run_study(study, client, storage, count, progress=not args.no_progress)
    return summarize(table, len(table) if seq else len(study.runs))


def summarize(table, planned: int) -> int:
    """The end of `run`: counts, the quick per-factor summary, failed runs with their reasons; exit code."""
    from harness.analysis.levels import quick_summary
    from harness.analysis.runs_table import factor_columns

    finished = table[table["status"] == "FINISHED"] if not table.empty else table
    if len(finished):
        print(f"\n{len(finished)}/{planned} runs finished; mean training time {finished['wall_time_s'].mean():.1f} s")
        varying = [f for f in factor_columns(table) if table[f].nunique() > 1]
        print(quick_summary(table, varying))
    else:
        print(f"\n0/{planned} runs finished")
    failed = table[table["status"] != "FINISHED"] if not table.empty else table
    for _, row in failed.iterrows():
        print(f"failed: {row['run_name']}: {row['failure_reason'] or row['status']}", file=sys.stderr)
    return EXIT_RUNS_FAILED if len(failed) else 0


def worker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness import tracking
    from harness.execution import prepared, run_queue, runner
    from harness.study.spec import parse_spec

    name, _ = study_argument(args)
    storage_url = args.storage or _local_storage()
    count = worker_count(args.workers, storage_url)
    queue = run_queue.RunQueue.open(run_queue.open_storage(storage_url), name, create=False)
    client = tracking.connect(args.tracking_uri or queue.attrs.get("tracking_uri"))
    prepared.apply_device(parse_spec(queue.attrs["spec_text"], Path(queue.attrs["spec_path"])))
    runner.drain(queue, storage_url, client, count, progress=not args.no_progress)
    print(status_line(queue.status()))
    return 0


def _local_storage() -> str:
    """`run`'s own SQLite storage on this machine: a second local worker joins it without naming it. Never
    created here: a worker with nothing to join would leave an empty store behind."""
    from pathlib import Path

    from harness.execution import run_queue

    url = run_queue.default_storage()
    if not Path(url.removeprefix("sqlite:///")).exists():
        raise HarnessError(f"no run storage at {url}: start the study with `harness run` here first, or pass "
                           "--storage URL of the machine that did")
    return url


def status(args: argparse.Namespace) -> int:
    from harness.execution import run_queue

    name, _ = spec_or_name(args.study)
    storage = run_queue.open_storage(args.storage, create=False)
    queue = run_queue.RunQueue.open(storage, name, create=False)
    print(f"{name}: {status_line(queue.status())}")
    return 0


def status_line(counts: dict) -> str:
    """One line; a trial whose worker stopped beating is stale (retried once a worker runs), and without a live
    worker there is no ETA."""
    eta = counts["eta_s"]
    if eta is None:
        eta_text = "none (no live worker)" if not counts["running"] else "unknown"
    else:
        eta_text = f"{eta / 60:.1f} min"
    return (
        f"{counts['done']} done, {counts['running']} running on {counts['live_workers']} live worker(s), "
        + (f"{counts['stale']} stale (worker gone; retried when a worker runs), " if counts["stale"] else "")
        + f"{counts['waiting']} waiting, "
        + (f"{counts['pruned']} pruned, " if counts["pruned"] else "")
        + f"{counts['failed']} failed, {counts['killed_retried']} killed (retried); ETA {eta_text}"
    )
