"""Training processes, shared by `run` and `tune`: attach to a study from its storage, train a trial, supervise.

A worker rebuilds everything it needs from the run storage alone (spec text, data fingerprint, tracking URI,
MLflow parent), so a worker on another machine is the same code as a local one. The parent side starts N
workers, replaces dead ones while work is left, and on Ctrl-C lets them finish their epoch and mark their run.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness import tracking
from harness.errors import HarnessError
from harness.execution import run_queue
from harness.study.spec import StudySpec, parse_spec
from harness.training.sources import StudyData, load_study_data

POLL_S = 1.0
STOP_TIMEOUT_S = 60  # an interrupted worker finishes its epoch and marks its run before this


def publish(queue: Any, spec: StudySpec, data: StudyData, client: Any) -> tuple[str, str]:
    """Create (or reuse) the study's MLflow parent and store what a worker needs on the queue; (exp id, parent id)."""
    spec_path = str(Path(spec.source_path).resolve())
    exp_id = tracking.experiment_id(client, spec.name)
    parent_id = tracking.study_parent(client, exp_id, spec.name, spec.source_text, spec_path)
    attrs = {"spec_text": spec.source_text, "spec_path": spec_path, "data_fingerprint": data.fingerprint,
             "tracking_uri": client.tracking_uri, "experiment_id": exp_id, "parent_run_id": parent_id}
    for key, value in attrs.items():
        queue.set_user_attr(key, value)
    return exp_id, parent_id


@dataclass
class Attached:
    """A training process's view of a study, rebuilt from the run storage alone (so other machines can join)."""

    storage: Any
    queue: Any
    client: Any
    spec: StudySpec
    data: StudyData
    cache_dir: Path
    experiment_id: str
    parent_id: str

    @classmethod
    def connect(cls, storage_url: str, study_name: str, tracking_uri: str | None, cache_dir: Path) -> Attached:
        """Imports no backend: the caller configures the process (determinism, threads) after this, before training."""
        storage = run_queue.open_storage(storage_url)
        queue = run_queue.open_queue(storage, study_name, create=False)
        attrs = queue.user_attrs
        spec = parse_spec(attrs["spec_text"], Path(attrs["spec_path"]))
        data = load_study_data(spec.data)
        if data.fingerprint != attrs["data_fingerprint"]:
            raise HarnessError(
                f"data here (fingerprint {data.fingerprint}) differs from the study's "
                f"({attrs['data_fingerprint']}); point the spec at the same files"
            )
        client = tracking.connect(tracking_uri or attrs["tracking_uri"])
        return cls(storage, queue, client, spec, data, cache_dir, attrs["experiment_id"], attrs["parent_run_id"])

    @cached_property
    def environment(self) -> dict[str, Any]:
        """Versions, build and devices, logged with every run; imports Keras, so only once training starts."""
        from harness import env

        return env.snapshot()

    def images_for(self, stage: Any) -> Any:
        return self.data.images_for(stage, self.cache_dir)

    def train(self, trial: Any, run: Any, on_epoch: Callable[[int, float], bool] | None = None) -> Any:
        """Train one claimed trial under a heartbeat and log it as a child run; Ctrl-C marks the child KILLED."""
        from harness.training.train import train_run

        with run_queue.heartbeat(trial):
            run_id = tracking.start_child(self.client, self.experiment_id, self.parent_id, run, self.environment,
                                          trial.number)
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                result = train_run(run, self.data.ids, self.data.digits, self.images_for, on_epoch=on_epoch,
                                   side=self.data.side, n_classes=self.data.n_classes)
                tracking.finish_child(self.client, run_id, result)
            except KeyboardInterrupt:
                tracking.end_child(self.client, run_id, "KILLED", "interrupted (Ctrl-C); rerun to resume")
                raise
        return result


def worker_entry(target: Callable[..., None], *args: Any) -> None:
    """A training process's top: Ctrl-C waits for the epoch's end; bad input exits 2 with one line, no traceback."""
    signal.signal(signal.SIGINT, defer_interrupt)
    try:
        target(*args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def defer_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C in a worker: stop at the end of the current epoch (train.STOP_REQUESTED); a second one at once."""
    from harness.training.train import STOP_REQUESTED

    STOP_REQUESTED.set()
    signal.signal(signal.SIGINT, signal.default_int_handler)


def supervise(target: Callable[..., None], args_of: Callable[[int], tuple], count: int, *,
              work_left: Callable[[], bool], on_tick: Callable[[], None], replacements: int = 0,
              what: str = "training") -> None:
    """Run `count` worker processes until all exit; replace dead ones while work is left.

    A worker that dies (killed, out of memory) leaves its trial RUNNING; its heartbeat goes stale and the queue
    gives it to another worker. If workers died and work is still left when none is running, that is an error.
    """
    context = mp.get_context("spawn")

    def start(index: int) -> Any:
        process = context.Process(target=worker_entry, args=(target, *args_of(index)), daemon=True)
        process.start()
        return process

    processes = [start(index) for index in range(count)]
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(POLL_S)
            on_tick()
            for index, process in enumerate(processes):
                if process.exitcode not in (None, 0) and replacements > 0 and work_left():
                    replacements -= 1
                    processes[index] = start(index)
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=STOP_TIMEOUT_S)  # workers got the same SIGINT: they mark their trial and exit
        raise
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    if any(process.exitcode != 0 for process in processes) and work_left():
        codes = sorted({process.exitcode for process in processes})
        raise HarnessError(f"{what} processes died (exit codes {codes}); run the same command again to resume")
