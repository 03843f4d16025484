"""What several commands share: reading a study argument (SPEC or NAME) and checking counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.study.spec import StudySpec, load_spec


def spec_or_name(study: str | Path) -> tuple[str, StudySpec | None]:
    """A study argument: a spec file (its name, and the spec) or a plain study name (and None)."""
    text = str(study)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        spec = load_spec(text)
        return spec.name, spec
    return text, None


def study_argument(args: Any) -> tuple[str, StudySpec | None]:
    """The study a command names positionally or with `--study`."""
    study = getattr(args, "study", None) or getattr(args, "study_option", None)
    if not study:
        raise HarnessError(f"{args.command}: name the study (a spec file or a study name in the store)")
    return spec_or_name(study)


def positive(count: int, option: str) -> int:
    if count < 1:
        raise HarnessError(f"{option}: got {count}; allowed: 1 or more")
    return count


# benchmarks/sim_queue.py: past 4 workers SQLite claims no faster, and at 8 one claim in 100 waited 37 s
SQLITE_MAX_WORKERS = 8


def worker_count(count: int, storage_url: str | None) -> int:
    """`--workers`, refused where the run storage cannot serve that many (SQLite: one writer at a time)."""
    positive(count, "--workers")
    if count > SQLITE_MAX_WORKERS and (storage_url is None or storage_url.startswith("sqlite:")):
        raise HarnessError(f"--workers {count}: a SQLite run storage serves at most {SQLITE_MAX_WORKERS} workers "
                           "(one writer at a time; claims wait tens of seconds beyond that); use PostgreSQL, "
                           "--storage postgresql://... (docs/scaling.md)")
    return count


def open_training(spec: StudySpec, args: Any) -> tuple[Any, Any, Any, int]:
    """What `run` and `tune` need before training, every check first: (study, MLflow client, run storage, workers).

    The order matters: worker count and tracking server are checked before the data loads, and nothing is
    written to either store until the study is prepared (spec, data, splits) and its device is there.
    """
    from harness import tracking
    from harness.execution import fork_server, prepared, run_queue
    from harness.study.design import study_backends

    count = worker_count(args.workers, args.storage)
    tracking.probe(args.tracking_uri or spec.tracking.uri)  # an unreachable server answers before data loads
    run_queue.probe_storage(args.storage)  # so does the run storage (it answered after the data: 6-30 s)
    prepared.apply_device(spec)
    # the server imports the backend (~9 s of CPU) on the second core while this process loads the data, checks
    # the splits and opens both stores (~8 s): started last, a 1-training study took 22 s, first, 15 s
    fork_server.start_process_server(study_backends(spec))
    study = prepared.prepare(spec)
    client = tracking.connect(args.tracking_uri or spec.tracking.uri)
    return study, client, run_queue.open_storage(args.storage), count
