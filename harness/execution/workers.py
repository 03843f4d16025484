"""Training processes, shared by `run` and `tune`: attach to a study from its storage, train a trial, supervise.

A worker rebuilds everything it needs from the run storage alone (spec text, data fingerprint, tracking URI,
MLflow parent), so a worker on another machine is the same code as a local one. The parent side starts N
workers, replaces dead ones while work is left, and on a stop signal (harness.signals) lets them finish their
epoch, mark their run KILLED and give their trial back; a worker never outlives its parent.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path
from typing import Any

from harness import signals, tracking
from harness.errors import AlreadyReported, DiskWriteError, HarnessError
from harness.execution import run_queue
from harness.execution.fork_server import PROCESS_START
from harness.files import kill_point
from harness.study.spec import StudySpec, parse_spec
from harness.training import checkpoint
from harness.training.sources import StudyData, load_study_data

POLL_S = 1.0
LEASE_LOST = (f"the run storage missed this training's heartbeats for over {run_queue.GRACE_S} s, so the queue "
              "may have given the run to another worker; not logged as done, the queue retries it")


def publish(queue: run_queue.RunQueue, spec: StudySpec, data: StudyData, client: Any,
            environments: dict[str, dict[str, str]] | None = None) -> tuple[str, str]:
    """Create (or reuse) the study's MLflow parent and store what a worker needs on the queue; (exp id, parent id).
    `environments`: the kernel environments the run keys were planned with (workers plan with the same)."""
    spec_path = str(Path(spec.source_path).resolve())
    exp_id = tracking.experiment_id(client, spec.name)
    parent_id = tracking.study_parent(client, exp_id, spec.name, spec.source_text, spec_path)
    attrs = {"spec_text": spec.source_text, "spec_path": spec_path, "data_fingerprint": data.fingerprint,
             "tracking_uri": client.tracking_uri, "experiment_id": exp_id, "parent_run_id": parent_id,
             "environments": environments or {}}
    for key, value in attrs.items():
        queue.set_attr(key, value)
    return exp_id, parent_id


@dataclass
class Attached:
    """A training process's view of a study, rebuilt from the run storage alone (so other machines can join)."""

    storage: Any
    queue: run_queue.RunQueue
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
        queue = run_queue.RunQueue.open(storage, study_name, create=False)
        attrs = queue.attrs
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

    @property
    def checkpoints(self) -> Path:
        """Where this machine's trainings keep their mid-training state: in the store, beside the cache."""
        return self.cache_dir.parent / checkpoint.FOLDER

    def train(self, trial: Any, run: Any, on_epoch: Callable[[int, float], bool]) -> Any:
        """Train one claimed trial alone, `on_epoch` hearing each epoch's validation accuracy (a pruner may stop
        it), and log it as a child run; its result."""
        results: list[Any] = []
        self.train_claimed([(trial, run)], lambda runs: [self._train_one(runs[0], on_epoch)], False,
                           lambda _trial, result: results.append(result))
        return results[0]

    def train_trials(self, claimed: list[tuple[Any, Any]], retry_out_of_memory: bool,
                     on_result: Callable[[Any, Any], None]) -> None:
        """Train claimed trials, one alone or one seed batch together (harness.training.seed_batch, when their
        runs ask for `execution.batch_seeds` > 1), each its own child run."""
        if claimed[0][1].config.execution.batch_seeds > 1:
            from harness.training.seed_batch import train_batch

            def trainer(runs: list[Any]) -> list[Any]:
                return train_batch(runs, self.data.ids, self.data.digits, self.images_for, side=self.data.side,
                                   n_classes=self.data.n_classes)
        else:
            def trainer(runs: list[Any]) -> list[Any]:
                return [self._train_one(run) for run in runs]
        self.train_claimed(claimed, trainer, retry_out_of_memory, on_result)

    def _train_one(self, run: Any, on_epoch: Callable[[int, float], bool] | None = None) -> Any:
        from harness.training.train import train_run

        return train_run(run, self.data.ids, self.data.digits, self.images_for, on_epoch=on_epoch,
                         side=self.data.side, n_classes=self.data.n_classes,
                         checkpoints=self.checkpoints)

    def train_claimed(self, claimed: list[tuple[Any, Any]], trainer: Callable[[list[Any]], list[Any]],
                      retry_out_of_memory: bool, on_result: Callable[[Any, Any], None]) -> None:
        """Train claimed (trial, run) pairs with `trainer` under their heartbeats; log each as a child run and
        hand each result to `on_result` as soon as it is logged (so the queue hears of it before the next).

        Each run's `cpu_time_s` is this process's CPU time over the training (every thread: the backend's pools,
        the input pipeline), its share for a seed batch: with `wall_time_s` it says how many cores a training
        kept busy, which is what decides how many workers a machine can run side by side."""
        from dataclasses import replace

        with contextlib.ExitStack() as beating:
            leases = [beating.enter_context(self.queue.heartbeat(trial)) for trial, _ in claimed]
            open_runs = {}
            for trial, run in claimed:
                open_runs[trial.number] = tracking.start_child(self.client, self.experiment_id, self.parent_id, run,
                                                               self.environment, trial.number)
                trial.set_user_attr("mlflow_run_id", open_runs[trial.number])
            try:
                cpu_started = time.process_time()
                results = trainer([run for _, run in claimed])
                cpu_share = (time.process_time() - cpu_started) / len(claimed)
                for (trial, _), lease, result in zip(claimed, leases, results, strict=True):
                    result = replace(result, cpu_time_s=cpu_share)
                    if result.out_of_memory and retry_out_of_memory:
                        result = replace(result, status="KILLED", failure_reason=f"{result.failure_reason}; retried")
                    run_id = open_runs.pop(trial.number)
                    if lease.lost:
                        tracking.end_child(self.client, run_id, "KILLED", LEASE_LOST)
                        raise LeaseLost(f"trial {trial.number}: {LEASE_LOST}")
                    self._finish(run_id, result)
                    if result.status != "KILLED":  # stored for good (an OOM to retry resumes from it)
                        checkpoint.discard(self.checkpoints, result.run.run_key)
                    kill_point("finished")  # crash tests: logged FINISHED, the queue not told yet
                    on_result(trial, result)
            except KeyboardInterrupt:
                name = signal.Signals(signals.received()).name
                for run_id in open_runs.values():
                    tracking.end_child(self.client, run_id, "KILLED", f"interrupted ({name}); rerun to resume")
                raise
            except (HarnessError, OSError) as err:  # the harness's or the machine's (train.is_training_failure)
                reason = str(err) if isinstance(err, HarnessError) else f"{_first_line(err)}; the run is retried"
                for run_id in open_runs.values():
                    tracking.end_child(self.client, run_id, "KILLED", reason)
                raise

    def _finish(self, run_id: str, result: Any) -> None:
        """Log the result; a full disk (or quota, or read-only store) under the artifacts is one line and the run
        KILLED, never FINISHED with half its files."""
        try:
            tracking.finish_child(self.client, run_id, result)
        except DiskWriteError as err:
            tracking.end_child(self.client, run_id, "KILLED", str(err))
            raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class LeaseLost(Exception):
    """This worker's training may have been given to another worker; it ends, and the parent replaces it."""


EXIT_REPORTED = 2  # the worker printed its one-line error; a replacement would meet it again
EXIT_LEASE_LOST = 3


def worker_entry(parent_pid: int, target: Callable[..., None], *args: Any) -> None:
    """A training process's top: a stop signal waits for the epoch's end, the parent's death is one; bad input
    exits 2 with one line, no traceback; a stop exits 128 + the signal's number."""
    from harness.training.train import STOP_REQUESTED

    signals.install_worker(STOP_REQUESTED, parent_pid)
    try:
        target(*args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_REPORTED)
    except LeaseLost as err:
        print(f"warning: {err}", file=sys.stderr)
        sys.exit(EXIT_LEASE_LOST)
    except KeyboardInterrupt:
        sys.exit(128 + signals.received())


STOPPED_CODES = {128 + signum for signum in signals.STOP_SIGNALS}


def supervise(target: Callable[..., None], args_of: Callable[[int], tuple], count: int, *,
              work_left: Callable[[], bool], on_tick: Callable[[], None], replacements: int = 0,
              more_work: Callable[[], bool] | None = None, what: str = "training") -> None:
    """Run `count` worker processes until all exit; replace dead ones while work is left.

    With `more_work`, a worker that ends cleanly is followed by a new one (from `args_of` again, so it may serve
    other work) while `more_work()` says something is waiting for one.

    A worker that dies (killed, out of memory) leaves its trial RUNNING; its heartbeat goes stale and the queue
    gives it to another worker. A worker stopped by a signal is not replaced. If workers died and work is still
    left when none is running, that is an error; if they were stopped, an interrupt.
    """
    context = mp.get_context(PROCESS_START)

    def start(index: int) -> Any:
        process = context.Process(target=worker_entry, args=(os.getpid(), target, *args_of(index)), daemon=True)
        process.start()
        return process

    processes = [start(index) for index in range(count)]
    try:
        while any(process.is_alive() for process in processes):
            # wakes as soon as a worker ends (the study's last training), else once per POLL_S
            wait_for_any([process.sentinel for process in processes if process.is_alive()], timeout=POLL_S)
            if signals.STOPPING.is_set():  # the handler's exception may have been swallowed by a library
                raise signals.Interrupted(signals.received())
            on_tick()
            for index, process in enumerate(processes):
                code = process.exitcode
                if code == EXIT_REPORTED:  # bad input or a full disk: the others stop at their epoch's end
                    raise AlreadyReported()
                if code not in (None, 0, *STOPPED_CODES) and replacements > 0 and work_left():
                    replacements -= 1
                    processes[index] = start(index)
                elif code == 0 and more_work is not None and more_work():
                    processes[index] = start(index)
    except (KeyboardInterrupt, AlreadyReported):
        _stop(processes)
        raise
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    codes = sorted({process.exitcode for process in processes})
    if EXIT_REPORTED in codes:
        raise AlreadyReported()
    if any(code != 0 for code in codes) and work_left():
        stopped = [code for code in codes if code in STOPPED_CODES]
        if stopped:  # someone stopped the workers themselves (a scheduler, a Ctrl-C on their pid)
            raise signals.Interrupted(stopped[0] - 128)
        raise HarnessError(f"{what} processes died (exit codes {codes}); run the same command again to resume")


def _stop(processes: list[Any]) -> None:
    """Ask every worker to stop (it may not have got the signal: one sent to the parent alone) and wait for them
    to end their epoch and give their trial back."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + signals.STOP_TIMEOUT_S
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
