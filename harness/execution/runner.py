"""`harness run`: planned runs → the run queue → training processes → MLflow; returns the study's runs table.

Trainings run in child processes, one process group per distinct process-level setting (TensorFlow fixes
threads and determinism per process); the parent never imports TensorFlow. A run's identity is its run key,
so a rerun after a crash enqueues only what is not done.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness import tracking
from harness.errors import DiskWriteError
from harness.execution import claims, rounds, run_queue, workers
from harness.execution.prepared import CACHE_DIR, Study, warm_cache
from harness.study.design import PlannedRun, plan_runs

MAX_REPLACEMENTS_PER_WORKER = 3


def run_study(study: Study, client: Any, storage: Any, count: int = 1, progress: bool = True) -> pd.DataFrame:
    """Enqueue every run not yet done, drain the queue with `count` processes, return the runs table."""
    warm_cache(study, study.runs)  # before the store is touched: a preprocessing error leaves nothing behind
    queue = run_queue.open_queue(storage, study.spec.name, create=True, kind=run_queue.KIND_RUN)
    exp_id, parent_id = workers.publish(queue, study.spec, study.data, client, study.environments)
    try:
        if study.spec.sequential:  # seeds in rounds until every comparison is settled (execution.rounds)
            rounds.train_in_rounds(
                study.runs, study.spec, client, exp_id, parent_id,
                enqueue=lambda runs: run_queue.enqueue(queue, runs, tracking.completed_run_keys(client, exp_id)),
                drain=lambda total: drain(queue, storage.url, client, count, total=total, progress=progress),
                workers=count)
        else:
            run_queue.enqueue(queue, study.runs, tracking.completed_run_keys(client, exp_id))
            drain(queue, storage.url, client, count, total=len(study.runs), progress=progress)
    except BaseException as err:  # the parent must not stay RUNNING after an interrupt or a dead worker
        tracking.finish_parent(client, parent_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    tracking.finish_parent(client, parent_id)
    table = tracking.runs_table(client, exp_id)
    keys = {run.run_key for run in study.runs}
    return table[table["run_key"].isin(keys)].reset_index(drop=True) if not table.empty else table


def drain(queue: Any, storage_url: str, client: Any, count: int, total: int | None = None,
          progress: bool = True) -> None:
    """Keep `count` worker processes training until no trial is waiting or running.

    TensorFlow fixes threads and determinism per process, so a worker trains one process group (runs sharing
    those settings) and exits when nothing of it is waiting. Its place goes at once to a new worker for a group
    that still has waiting trials, so one group's last trainings overlap the next group's first instead of
    leaving cores idle at every group's end. A worker that dies is replaced; its trial is retried once its
    heartbeat goes stale.
    """
    from tqdm import tqdm

    exp_id = queue.user_attrs["experiment_id"]
    bar = tqdm(total=total, unit="run", desc=queue.study_name, disable=not progress, file=sys.stderr)
    cache_dir = CACHE_DIR.resolve()
    try:
        while groups := run_queue.group_counts(queue):
            first = _waiting_group(groups)
            if first is None:  # only RUNNING trials left: other machines' or dead workers' (stale soon)
                _wait_for_stale(queue, client, exp_id, bar)
                continue

            def args_of(_index: int, first: tuple = first) -> tuple:
                group = _waiting_group(run_queue.group_counts(queue)) or first  # none waiting: it exits at once
                return storage_url, queue.study_name, list(group), client.tracking_uri, cache_dir

            workers.supervise(train_group, args_of, count,
                              work_left=lambda: bool(run_queue.group_counts(queue)),
                              more_work=lambda: _waiting_group(run_queue.group_counts(queue)) is not None,
                              on_tick=lambda: _show_progress(queue, bar),
                              replacements=MAX_REPLACEMENTS_PER_WORKER * count)
    finally:
        _show_progress(queue, bar)
        bar.close()
    tracking.mark_orphans(client, exp_id, live_trials=set())


def _waiting_group(groups: dict[tuple, dict[str, int]]) -> tuple | None:
    """The first process group (in queue order) with a WAITING trial, or None."""
    return next((group for group, counts in groups.items() if counts["WAITING"]), None)


def _wait_for_stale(queue: Any, client: Any, exp_id: str, bar: Any) -> None:
    from optuna.trial import TrialState

    time.sleep(run_queue.HEARTBEAT_S)
    run_queue.fail_stale(queue)
    live = {t.number for t in queue.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    tracking.mark_orphans(client, exp_id, live)
    _show_progress(queue, bar)


def _show_progress(queue: Any, bar: Any) -> None:
    counts = run_queue.status(queue)
    bar.n = counts["done"] + counts["failed"]
    bar.set_postfix_str(f"running {counts['running']}, failed {counts['failed']}", refresh=True)


def train_group(storage_url: str, study_name: str, group: list[Any], tracking_uri: str, cache_dir: Path) -> None:
    """A training process: configure determinism first, then claim and train trials of its group until none."""
    from harness.training import determinism

    determinism.configure_group(group)
    attached = workers.Attached.connect(storage_url, study_name, tracking_uri, cache_dir)
    runs = plan_runs(attached.spec, attached.data.fingerprint, attached.data.images.shape[1],
                     attached.queue.user_attrs.get("environments"))  # the enqueuing machine's: the same run keys
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

    def unknown(self, trial: Any) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(run_queue.REAL_FAILURE, "run key not in the study's current spec")
        self.attached.queue.tell(trial, state=TrialState.FAIL)

    def execute(self, trials: list[Any], runs: dict[str, PlannedRun]) -> None:
        """Train the claimed trials (one, or one seed batch) and tell each as soon as it is logged: done, FAILED
        for good, or retried (out of memory, at most MAX_RETRY times, like a dead worker's trial). On a stop,
        those not yet told are given back."""
        claimed = []
        for trial in trials:
            run = runs.get(trial.user_attrs[run_queue.RUN_KEY])
            if run is None:
                self.unknown(trial)
            elif (accuracy := self.logged_before(trial, run)) is not None:
                self.attached.queue.tell(trial, accuracy)
            else:
                run_queue.record_levels(trial, run.factors, self.levels)
                claimed.append((trial, run))
        if not claimed:
            return
        told: set[int] = set()

        def tell(trial: Any, result: Any) -> None:
            self.tell(trial, result)
            told.add(trial.number)

        retry = all(run_queue.retries_left(trial) for trial, _ in claimed)
        try:
            self.attached.train_trials(claimed, retry_out_of_memory=retry, on_result=tell)
        except (KeyboardInterrupt, DiskWriteError):
            for trial, _ in claimed:
                if trial.number not in told:
                    run_queue.give_back(self.attached.queue, trial)
            raise

    def tell(self, trial: Any, result: Any) -> None:
        """Done, FAILED for good (its reason recorded), or retried (KILLED: out of memory)."""
        from optuna.trial import TrialState

        queue = self.attached.queue
        if result.status == "FINISHED":
            queue.tell(trial, result.accuracy)
        elif result.status == "KILLED":
            run_queue.retry(queue, trial)
        else:
            trial.set_user_attr(run_queue.REAL_FAILURE, result.failure_reason)
            queue.tell(trial, state=TrialState.FAIL)

    def logged_before(self, trial: Any, run: PlannedRun) -> float | None:
        """A retry of a trial whose worker died after MLflow recorded the run FINISHED but before the queue was
        told: the logged accuracy, so the run is not trained (and logged) twice. Only retries are looked up."""
        if not run_queue.is_retry(trial):
            return None
        return tracking.finished_accuracy(self.attached.client, self.attached.experiment_id, run.run_key)
