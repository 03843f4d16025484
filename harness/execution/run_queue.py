"""Optuna storage as the run queue: every planned training is an enqueued trial; workers claim them.

Claiming uses Optuna's own atomic WAITING → RUNNING transition (`storage.set_trial_state_values`), the same one
`Study.ask` uses, so two workers never take the same trial, on one machine or many. A claimed trial sends
heartbeats; a worker that dies stops them, `optuna.storages.fail_stale_trials` marks its trial FAIL and
`RetryFailedTrialCallback` enqueues a copy for someone else. A training that fails for a real reason (NaN loss)
is told FAIL with its reason and is not retried.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.execution.storage import GRACE_S, HEARTBEAT_S, MAX_RETRY, default_storage, open_storage, probe_storage  # noqa: F401

RUN_KEY, PROCESS_KEY = "run_key", "process_key"
BATCH_KEY = "batch_key"  # runs that differ only in seeds, where the study trains them as seed batches
KIND, KIND_RUN, KIND_TUNE = "kind", "run", "tune"
OVERRIDES = "overrides"  # a search trial's searched values (JSON)
REAL_FAILURE = "failure_reason"  # user attr set only when the training itself failed: never retried
WORKER = "worker"  # user attr: host:pid of the process that claimed the trial


def open_queue(storage: Any, name: str, create: bool, kind: str | None = None) -> Any:
    """The study's queue; with `create`, made if missing. `kind` (run or tune) must match what it was made as."""
    import optuna

    try:
        if create:
            queue = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        else:
            queue = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise HarnessError(f"no study named '{name}' in the run storage {storage.url}; start it with "
                           "`harness run SPEC`, or point --storage at the store it ran in") from None
    if kind is not None:
        claim_kind(queue, kind)
    return queue


def claim_kind(queue: Any, kind: str) -> None:
    """One study name, one kind: a `run` queue's trials carry no searched values, a search's carry no run keys."""
    found = queue.user_attrs.get(KIND)
    if found is None and queue.get_trials(deepcopy=False):
        found = KIND_TUNE if any(OVERRIDES in t.user_attrs for t in queue.get_trials(deepcopy=False)) else KIND_RUN
    if found is not None and found != kind:
        other = {KIND_RUN: "harness run", KIND_TUNE: "harness tune"}[found]
        raise HarnessError(f"study '{queue.study_name}' is a {found} study in the run storage (made by `{other}`); "
                           f"give this spec another name, or use `{other}`")
    queue.set_user_attr(KIND, kind)


@dataclass(frozen=True)
class QueueState:
    """Trials by run key, for deciding what still needs a training."""

    done: set[str]
    queued: set[str]

    @classmethod
    def of(cls, queue: Any) -> QueueState:
        from optuna.trial import TrialState

        done, queued = set(), set()
        for trial in queue.get_trials(deepcopy=False):
            key = trial.user_attrs.get(RUN_KEY)
            if trial.state == TrialState.COMPLETE or (
                trial.state == TrialState.FAIL and REAL_FAILURE in trial.user_attrs
            ):
                done.add(key)
            elif trial.state in (TrialState.WAITING, TrialState.RUNNING):
                queued.add(key)
        return cls(done, queued)


def enqueue(queue: Any, runs: list[Any], completed_elsewhere: set[str]) -> int:
    """Enqueue every run not done or already queued; killed or interrupted runs are enqueued again."""
    from harness.study.design import process_key

    fail_stale(queue)
    state = QueueState.of(queue)
    count = 0
    for run in runs:
        if run.run_key in state.done | state.queued | completed_elsewhere:
            continue
        queue.enqueue_trial({}, user_attrs=queue_attrs(run.run_key, list(process_key(run)), batch_key_of(run)))
        count += 1
    return count


def batch_key_of(run: Any) -> str | None:
    """The run's seed-batch key where its study trains seed batches (`execution.batch_seeds` > 1), else None."""
    return run.batch_key if run.config.execution.batch_seeds > 1 else None


def queue_attrs(run_key: str, process_key: list[Any], batch_key: str | None) -> dict[str, Any]:
    """What a queued trial carries: its run, its process group, and its seed batch where it has one."""
    attrs: dict[str, Any] = {RUN_KEY: run_key, PROCESS_KEY: process_key}
    return attrs if batch_key is None else {**attrs, BATCH_KEY: batch_key}


def fail_stale(queue: Any) -> None:
    import optuna

    optuna.storages.fail_stale_trials(queue)


def record_levels(trial: Any, factors: dict[str, str], levels: dict[str, list[str]]) -> None:
    """A run's factor levels as categorical params of its trial, so optuna-dashboard can plot and filter by them."""
    from optuna.distributions import CategoricalDistribution

    for key, label in factors.items():
        distribution = CategoricalDistribution(levels[key])
        try:
            trial.study._storage.set_trial_param(trial._trial_id, key, distribution.to_internal_repr(label),
                                                 distribution)
        except ValueError:  # an edited spec changed this factor's levels: Optuna allows one choice list per name
            continue


def give_back(queue: Any, trial: Any) -> None:
    """An interrupted trial ends FAIL and a WAITING copy takes its place, so any worker (here after a rerun, or
    one on another machine now) trains it; a stop is not the run's fault, so it does not count as a retry."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    queue.tell(trial, state=TrialState.FAIL)
    queue.enqueue_trial({}, user_attrs=queue_attrs(attrs[RUN_KEY], attrs[PROCESS_KEY], attrs.get(BATCH_KEY)))


def retries_left(trial: Any) -> bool:
    """Whether a failed attempt of this trial may be retried: it has been retried fewer than MAX_RETRY times."""
    import optuna

    frozen = trial.study._storage.get_trial(trial._trial_id)
    return len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)) < MAX_RETRY


def is_retry(trial: Any) -> bool:
    """Whether this trial retries an earlier attempt (a dead worker's, an out-of-memory one)."""
    import optuna

    frozen = trial.study._storage.get_trial(trial._trial_id)
    return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen) is not None


def retry(queue: Any, trial: Any) -> None:
    """FAIL this attempt and enqueue a retry, exactly as a dead worker's trial is (Optuna's stale-trial callback,
    which keeps the retry history that `retries_left` counts)."""
    import optuna
    from optuna.trial import TrialState

    queue.tell(trial, state=TrialState.FAIL)
    again = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    again(queue, queue._storage.get_trial(trial._trial_id))


@dataclass
class Lease:
    """A claimed trial's hold on its run. Lost once no heartbeat has reached the storage for GRACE_S (a database
    down that long): others may have taken the trial for a dead worker's by then, so this training must not be
    logged as the run's result."""

    last_beat: float = field(default_factory=time.monotonic)
    gap_seen: bool = False

    def beaten(self) -> None:
        now = time.monotonic()
        self.gap_seen |= now - self.last_beat > GRACE_S
        self.last_beat = now

    @property
    def lost(self) -> bool:
        return self.gap_seen or time.monotonic() - self.last_beat > GRACE_S


@contextmanager
def heartbeat(trial: Any) -> Iterator[Lease]:
    """Beat while the trial runs, so a live worker's trial is never taken for a dead one's. A beat that fails
    (the database restarting) is not the end: the next one reconnects; only a gap over GRACE_S loses the lease."""
    stop, lease = threading.Event(), Lease()
    storage, trial_id = trial.study._storage, trial._trial_id

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # noqa: BLE001 -- any driver error; the storage's pool reconnects next time
                print(f"warning: heartbeat of trial {trial.number} failed: {type(err).__name__}", file=sys.stderr)
            else:
                lease.beaten()

    thread = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()


def group_counts(queue: Any) -> dict[tuple, dict[str, int]]:
    """WAITING/RUNNING counts per process group: what still has to be drained, in a stable order."""
    from optuna.trial import TrialState

    counts: dict[tuple, dict[str, int]] = {}
    for trial in queue.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        group = tuple(trial.user_attrs.get(PROCESS_KEY, ()))
        counts.setdefault(group, {"WAITING": 0, "RUNNING": 0})[trial.state.name] += 1
    return counts


def status(queue: Any) -> dict[str, Any]:
    """done / running / stale / waiting / failed counts, live workers, and an ETA from the mean duration of
    finished trials; a RUNNING trial whose heartbeat stopped belongs to a dead worker and counts as stale, not
    running. No ETA while no worker is alive."""
    from optuna.trial import TrialState

    trials = queue.get_trials(deepcopy=False)
    stale_ids = set(queue._storage._get_stale_trial_ids(queue._study_id))  # what fail_stale_trials uses
    counts = {"done": 0, "running": 0, "stale": 0, "waiting": 0, "pruned": 0, "failed": 0, "killed_retried": 0}
    durations, workers = [], set()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts["done"] += 1
            durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        elif trial.state == TrialState.RUNNING and trial._trial_id in stale_ids:
            counts["stale"] += 1
        elif trial.state == TrialState.RUNNING:
            counts["running"] += 1
            workers.add(trial.user_attrs.get(WORKER))
        elif trial.state == TrialState.WAITING:
            counts["waiting"] += 1
        elif trial.state == TrialState.PRUNED:  # tune: stopped early by the pruner, final
            counts["pruned"] += 1
        elif REAL_FAILURE in trial.user_attrs:
            counts["failed"] += 1
        else:
            counts["killed_retried"] += 1
    left = counts["waiting"] + counts["running"] + counts["stale"]
    mean = sum(durations) / len(durations) if durations else None
    counts["live_workers"] = len(workers)
    counts["eta_s"] = 0.0 if not left else None if mean is None or not counts["running"] else mean * left / len(workers)
    counts["mean_trial_s"] = mean
    return counts
