"""`harness run`: planned runs → the run queue → training processes → MLflow; returns the study's runs table.

Trainings run in child processes, one process group per distinct process-level setting (TensorFlow fixes
threads and determinism per process); the parent never imports TensorFlow. A run's identity is its run key,
so a rerun after a crash enqueues only what is not done.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness import tracking
from harness.errors import HarnessError
from harness.execution import claims, rounds, run_queue, workers
from harness.execution.prepared import CACHE_DIR, Study, warm_cache
from harness.study.design import PlannedRun, plan_runs

MAX_REPLACEMENTS_PER_WORKER = 3


def run_study(study: Study, client: Any, storage: Any, count: int = 1, progress: bool = True) -> pd.DataFrame:
    """Enqueue every run not yet done, drain the queue with `count` processes, return the runs table."""
    warm_cache(study, study.runs)  # before the store is touched: a preprocessing error leaves nothing behind
    queue = run_queue.RunQueue.open(storage, study.spec.name, create=True, kind=run_queue.KIND_RUN)
    exp_id, parent_id = workers.publish(queue, study.spec, study.data, client, study.environments)

    def enqueue(runs: list[PlannedRun]) -> int:
        return queue.enqueue(runs, tracking.completed_run_keys(client, exp_id))

    def drain_queue(total: int) -> None:
        drain(queue, storage.url, client, count, total=total, progress=progress)

    try:
        if study.spec.sequential:  # seeds in rounds until every comparison is settled (execution.rounds)
            rounds.train_in_rounds(study.runs, study.spec, client, exp_id, parent_id, enqueue=enqueue,
                                   drain=drain_queue, workers=count)
        else:
            enqueue(study.runs)
            drain_queue(len(study.runs))
    except BaseException as err:  # the parent must not stay RUNNING after an interrupt or a dead worker
        tracking.finish_parent(client, parent_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    tracking.finish_parent(client, parent_id)
    table = tracking.runs_table(client, exp_id)
    keys = {run.run_key for run in study.runs}
    return table[table["run_key"].isin(keys)].reset_index(drop=True) if not table.empty else table


def drain(queue: run_queue.RunQueue, storage_url: str, client: Any, count: int, total: int | None = None,
          progress: bool = True) -> None:
    """Keep `count` worker processes training until no trial is waiting or running.

    TensorFlow fixes threads and determinism per process, so a worker trains one process group (runs sharing
    those settings) and exits when nothing of it is waiting. Its place goes at once to a new worker for a group
    that still has waiting trials, so one group's last trainings overlap the next group's first instead of
    leaving cores idle at every group's end. A worker that dies is replaced; its trial is retried once its
    heartbeat goes stale.
    """
    from tqdm import tqdm

    exp_id = queue.attrs["experiment_id"]
    bar = tqdm(total=total, unit="run", desc=queue.name, disable=not progress, file=sys.stderr)
    draining = Draining(queue, storage_url, client.tracking_uri, CACHE_DIR.resolve(), bar)
    try:
        while groups := queue.group_counts():
            first = first_waiting(groups)
            if first is None:  # only RUNNING trials left: other machines' or dead workers' (stale soon)
                draining.wait_for_stale(client, exp_id)
                continue
            draining.last_group = first
            workers.supervise(train_group, draining.worker_args, count, work_left=draining.work_left,
                              more_work=draining.more_work, on_tick=draining.show_progress,
                              replacements=MAX_REPLACEMENTS_PER_WORKER * count)
    finally:
        draining.show_progress()
        bar.close()
    tracking.mark_orphans(client, exp_id, live_trials=set())


def first_waiting(groups: dict[tuple, dict[str, int]]) -> tuple | None:
    """The first process group (in queue order) with a WAITING trial, or None."""
    return next((group for group, counts in groups.items() if counts["WAITING"]), None)


@dataclass
class Draining:
    """What `workers.supervise` asks the queue while `drain` runs workers: each question one method."""

    queue: run_queue.RunQueue
    storage_url: str
    tracking_uri: str
    cache_dir: Path
    bar: Any
    last_group: tuple = ()  # the group the current supervise started with

    def worker_args(self, _index: int) -> tuple:
        """A new worker's arguments: the first group with a WAITING trial (else the last one: it exits at once)."""
        group = first_waiting(self.queue.group_counts()) or self.last_group
        return self.storage_url, self.queue.name, list(group), self.tracking_uri, self.cache_dir

    def work_left(self) -> bool:
        """Something is still WAITING or RUNNING: a dead worker is replaced."""
        return bool(self.queue.group_counts())

    def more_work(self) -> bool:
        """Something is WAITING: a worker that ended cleanly is followed by a new one."""
        return first_waiting(self.queue.group_counts()) is not None

    def show_progress(self) -> None:
        counts = self.queue.status()
        self.bar.n = counts["done"] + counts["failed"]
        self.bar.set_postfix_str(f"running {counts['running']}, failed {counts['failed']}", refresh=True)

    def wait_for_stale(self, client: Any, exp_id: str) -> None:
        """Nothing waits, something runs: give dead workers' trials a beat to go stale, retry them, and mark
        the MLflow runs of trials no longer RUNNING as orphans."""
        time.sleep(run_queue.HEARTBEAT_S)
        self.queue.fail_stale()
        tracking.mark_orphans(client, exp_id, self.queue.running_numbers())
        self.show_progress()


def train_group(storage_url: str, study_name: str, group: list[Any], tracking_uri: str, cache_dir: Path) -> None:
    """A training process: configure determinism first, then claim and train trials of its group until none."""
    from harness.training import determinism

    determinism.configure_group(group)
    attached = workers.Attached.connect(storage_url, study_name, tracking_uri, cache_dir)
    runs = plan_runs(attached.spec, attached.data.fingerprint, attached.data.images.shape[1],
                     attached.queue.attrs.get("environments"))  # the enqueuing machine's: the same run keys
    GroupWorker(attached, runs).loop(group)


@dataclass
class GroupWorker:
    """Claims trials of one process group and trains the planned run each one names."""

    attached: workers.Attached
    runs: list[PlannedRun]

    @cached_property
    def levels(self) -> dict[str, list[str]]:
        """Each factor's level labels in plan order: the choices of the trial param that records a run's level."""
        levels: dict[str, list[str]] = {}
        for run in self.runs:
            for key, label in run.factors.items():
                if label not in levels.setdefault(key, []):
                    levels[key].append(label)
        return levels

    def loop(self, group: list[Any]) -> None:
        from harness.training.train import STOP_REQUESTED

        queue = self.attached.queue
        runs = {run.run_key: run for run in self.runs}
        claimer = claims.Claimer(queue, group)
        while True:
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            trial = claimer.claim()
            if trial is None:  # what is still RUNNING is live workers' (the parent waits for them) or dead ones'
                return  # (the parent retries those once their heartbeat is stale): no reason to stay and poll
            run = runs.get(trial.user_attrs[run_queue.RUN_KEY])
            lanes = run.config.execution.batch_seeds if run is not None else 1
            companions = claimer.claim_companions(trial, lanes - 1) if lanes > 1 else []
            self.execute([trial, *companions], runs)

    def execute(self, trials: list[Any], runs: dict[str, PlannedRun]) -> None:
        """Train the claimed trials (one, or one seed batch) and tell each as soon as it is logged: done, FAILED
        for good, or retried (out of memory, at most MAX_RETRY times, like a dead worker's trial). On a stop,
        those not yet told are given back."""
        queue = self.attached.queue
        claimed = []
        for trial in trials:
            run = runs.get(trial.user_attrs[run_queue.RUN_KEY])
            if run is None:
                queue.fail(trial, "run key not in the study's current spec")
            elif (accuracy := self.logged_before(trial, run)) is not None:
                queue.complete(trial, accuracy)
            else:
                queue.record_levels(trial, run.factors, self.levels)
                claimed.append((trial, run))
        if not claimed:
            return
        told = Told(queue)
        retry = all(queue.retries_left(trial) for trial, _ in claimed)
        try:
            self.attached.train_trials(claimed, retry_out_of_memory=retry, on_result=told.tell)
        except (KeyboardInterrupt, HarnessError, OSError):  # a stop, or the harness's error: not the run's fault
            for trial, _ in claimed:
                if trial.number not in told.numbers:
                    queue.give_back(trial)
            raise

    def logged_before(self, trial: Any, run: PlannedRun) -> float | None:
        """A retry of a trial whose worker died after MLflow recorded the run FINISHED but before the queue was
        told: the logged accuracy, so the run is not trained (and logged) twice. Only retries are looked up."""
        if not self.attached.queue.is_retry(trial):
            return None
        return tracking.finished_accuracy(self.attached.client, self.attached.experiment_id, run.run_key)


@dataclass
class Told:
    """The queue hears of each result of a training as soon as it is logged; the trials it heard of are not
    given back when the rest of a seed batch is interrupted."""

    queue: run_queue.RunQueue
    numbers: set[int] = field(default_factory=set)

    def tell(self, trial: Any, result: Any) -> None:
        """Done, FAILED for good (its reason recorded), or retried (KILLED: out of memory)."""
        if result.status == "FINISHED":
            self.queue.complete(trial, result.accuracy)
        elif result.status == "KILLED":
            self.queue.retry(trial)
        else:
            self.queue.fail(trial, result.failure_reason)
        self.numbers.add(trial.number)
