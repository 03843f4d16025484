"""The run queue (`RunQueue`): every planned training is an enqueued Optuna trial; workers claim, beat and end them.

Claiming uses Optuna's own atomic WAITING → RUNNING transition (`storage.set_trial_state_values`), the same one
`Study.ask` uses, so two workers never take the same trial, on one machine or many. A claimed trial sends
heartbeats; a worker that dies stops them, `optuna.storages.fail_stale_trials` marks its trial FAIL and
`RetryHeartbeatStaleTrialCallback` enqueues a copy for someone else. A training that fails for a real reason
(NaN loss) is told FAIL with its reason and is not retried. Which worker claims what, and in which order, is
claims.py; this module is every step a trial goes through, and the only one that reaches into Optuna's internals.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.execution.storage import GRACE_S, HEARTBEAT_S, MAX_RETRY, default_storage, open_storage, probe_storage  # noqa: F401
from harness.files import kill_point

RUN_KEY, PROCESS_KEY = "run_key", "process_key"
BATCH_KEY = "batch_key"  # runs that differ only in seeds, where the study trains them as seed batches
KIND, KIND_RUN, KIND_TUNE = "kind", "run", "tune"
OVERRIDES = "overrides"  # a search trial's searched values (JSON)
REAL_FAILURE = "failure_reason"  # user attr set only when the training itself failed: never retried
WORKER = "worker"  # user attr: host:pid of the process that claimed the trial


def queue_attrs(run_key: str, process_key: list[Any], batch_key: str | None) -> dict[str, Any]:
    """What a queued trial carries: its run, its process group, and its seed batch where it has one."""
    attrs: dict[str, Any] = {RUN_KEY: run_key, PROCESS_KEY: process_key}
    return attrs if batch_key is None else {**attrs, BATCH_KEY: batch_key}


def batch_key_of(run: Any) -> str | None:
    """The run's seed-batch key where its study trains seed batches (`execution.batch_seeds` > 1), else None."""
    return run.batch_key if run.config.execution.batch_seeds > 1 else None


@dataclass(frozen=True)
class QueueState:
    """Trials by run key, for deciding what still needs a training."""

    done: set[str]
    queued: set[str]

    @classmethod
    def of(cls, queue: RunQueue) -> QueueState:
        from optuna.trial import TrialState

        done, queued = set(), set()
        for trial in queue.trials():
            key = trial.user_attrs.get(RUN_KEY)
            if trial.state == TrialState.COMPLETE or (
                trial.state == TrialState.FAIL and REAL_FAILURE in trial.user_attrs
            ):
                done.add(key)
            elif trial.state in (TrialState.WAITING, TrialState.RUNNING):
                queued.add(key)
        return cls(done, queued)


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


class RunQueue:
    """A study's run queue: an Optuna study whose trials are the planned trainings. Every use of Optuna's
    internals by the harness is here (a trial's storage id `_trial_id`, the study's `_storage` and `_study_id`,
    the private `_get_stale_trial_ids`), plus the storage class in reconnecting.py; each is exercised against
    the installed Optuna by tests/execution/test_optuna_pins.py.

    `study` is the Optuna study, for what Optuna's public API does well (its trials, optuna-dashboard)."""

    def __init__(self, study: Any) -> None:
        self.study = study

    @classmethod
    def open(cls, storage: Any, name: str, create: bool, kind: str | None = None) -> RunQueue:
        """The study's queue; with `create`, made if missing. `kind` (run or tune) must match what it was made as."""
        import optuna

        try:
            if create:
                study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                            load_if_exists=True)
            else:
                study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise HarnessError(f"no study named '{name}' in the run storage {storage.url}; start it with "
                               "`harness run SPEC`, or point --storage at the store it ran in") from None
        queue = cls(study)
        if kind is not None:
            queue.claim_kind(kind)
        return queue

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def attrs(self) -> dict[str, Any]:
        """What the study stores for its workers (spec text, data fingerprint, MLflow ids: workers.publish)."""
        return self.study.user_attrs

    def set_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def trials(self, *states: Any) -> list[Any]:
        """The study's trials (FrozenTrial, not copied), only those in `states` when given."""
        return self.study.get_trials(deepcopy=False, states=states or None)

    def claim_kind(self, kind: str) -> None:
        """One study name, one kind: a `run` queue's trials carry no searched values, a search's carry no run keys."""
        found = self.attrs.get(KIND)
        if found is None and (trials := self.trials()):
            found = KIND_TUNE if any(OVERRIDES in t.user_attrs for t in trials) else KIND_RUN
        if found is not None and found != kind:
            other = {KIND_RUN: "harness run", KIND_TUNE: "harness tune"}[found]
            raise HarnessError(f"study '{self.name}' is a {found} study in the run storage (made by `{other}`); "
                               f"give this spec another name, or use `{other}`")
        self.set_attr(KIND, kind)

    # ---------------------------------------------------------------- enqueue and claim

    def enqueue(self, runs: list[Any], completed_elsewhere: set[str]) -> int:
        """Enqueue every run not done or already queued; killed or interrupted runs are enqueued again."""
        from harness.study.design import process_key

        self.fail_stale()
        state = QueueState.of(self)
        count = 0
        for run in runs:
            if run.run_key in state.done | state.queued | completed_elsewhere:
                continue
            self.study.enqueue_trial({}, user_attrs=queue_attrs(run.run_key, list(process_key(run)),
                                                                batch_key_of(run)))
            count += 1
        return count

    def waiting(self, process_key: list[Any]) -> dict[int, str | None]:
        """The WAITING trials of one process group: storage id → seed-batch key (None outside seed batches).
        FrozenTrial keeps its storage id private; Optuna's own queue pop uses it the same way."""
        from optuna.trial import TrialState

        return {t._trial_id: t.user_attrs.get(BATCH_KEY) for t in self.trials(TrialState.WAITING)
                if t.user_attrs.get(PROCESS_KEY) == process_key}

    def take(self, trial_id: int) -> Any | None:
        """The trial, now RUNNING and this worker's, or None when another worker took it first. Optuna's own
        atomic WAITING → RUNNING transition, the one `Study.ask` uses: two workers never take one trial."""
        import optuna
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.study._storage
        try:
            # the heartbeat first: Optuna never counts a RUNNING trial without a heartbeat row as stale, so a worker
            # killed between the transition and its first beat left the trial RUNNING for ever and `run` waiting.
            # A beat on a trial another worker then wins is harmless: the winner beats it from then on.
            storage.record_heartbeat(trial_id)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                kill_point("claimed")
                storage.set_trial_user_attr(trial_id, WORKER, f"{socket.gethostname()}:{os.getpid()}")
                return optuna.Trial(self.study, trial_id)
        except UpdateFinishedTrialError:
            pass
        return None

    # ---------------------------------------------------------------- a claimed trial

    @contextmanager
    def heartbeat(self, trial: Any) -> Iterator[Lease]:
        """Beat while the trial runs, so a live worker's trial is never taken for a dead one's. A beat that fails
        (the database restarting) is not the end: the next one reconnects; only a gap over GRACE_S loses the
        lease. Beats run on their own thread until the block ends."""
        stop, lease = threading.Event(), Lease()
        beating = threading.Thread(target=self._beat, args=(trial, stop, lease), name="harness-heartbeat",
                                   daemon=True)
        beating.start()
        try:
            yield lease
        finally:
            stop.set()
            beating.join()

    def _beat(self, trial: Any, stop: threading.Event, lease: Lease) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                self.study._storage.record_heartbeat(trial._trial_id)
            except Exception as err:  # noqa: BLE001 -- any driver error; the storage's pool reconnects next time
                print(f"warning: heartbeat of trial {trial.number} failed: {type(err).__name__}", file=sys.stderr)
            else:
                lease.beaten()

    def record_levels(self, trial: Any, factors: dict[str, str], levels: dict[str, list[str]]) -> None:
        """A run's factor levels as categorical params of its trial, so optuna-dashboard can plot and filter by
        them (Optuna's public `suggest_*` would sample them; the storage call sets them as they are)."""
        from optuna.distributions import CategoricalDistribution

        for key, label in factors.items():
            distribution = CategoricalDistribution(levels[key])
            try:
                self.study._storage.set_trial_param(trial._trial_id, key, distribution.to_internal_repr(label),
                                                    distribution)
            except ValueError:  # an edited spec changed this factor's levels: Optuna allows one choice list per name
                continue

    def is_retry(self, trial: Any) -> bool:
        """Whether this trial retries an earlier attempt (a dead worker's, an out-of-memory one)."""
        import optuna

        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(self._frozen(trial)) is not None

    def retries_left(self, trial: Any) -> bool:
        """Whether a failed attempt of this trial may be retried: it has been retried fewer than MAX_RETRY times."""
        import optuna

        return len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(self._frozen(trial))) < MAX_RETRY

    def _frozen(self, trial: Any) -> Any:
        """The trial as stored now (a claimed `optuna.Trial` carries no retry history of its own)."""
        return self.study._storage.get_trial(trial._trial_id)

    # ---------------------------------------------------------------- how a claimed trial ends

    def complete(self, trial: Any, accuracy: float) -> None:
        self.study.tell(trial, accuracy)

    def fail(self, trial: Any, reason: str) -> None:
        """FAILED for good: the training itself failed (NaN loss, a model error); its reason is recorded, it counts
        as done and is never retried."""
        from optuna.trial import TrialState

        trial.set_user_attr(REAL_FAILURE, reason)
        self.study.tell(trial, state=TrialState.FAIL)

    def give_back(self, trial: Any) -> None:
        """An interrupted trial ends FAIL and a WAITING copy takes its place, so any worker (here after a rerun, or
        one on another machine now) trains it; a stop is not the run's fault, so it does not count as a retry."""
        from optuna.trial import TrialState

        attrs = trial.user_attrs
        self.study.tell(trial, state=TrialState.FAIL)
        self.study.enqueue_trial({}, user_attrs=queue_attrs(attrs[RUN_KEY], attrs[PROCESS_KEY], attrs.get(BATCH_KEY)))

    def retry(self, trial: Any) -> None:
        """FAIL this attempt and enqueue a retry, exactly as a dead worker's trial is (Optuna's stale-trial
        callback, which keeps the retry history that `retries_left` counts)."""
        import optuna
        from optuna.trial import TrialState

        self.study.tell(trial, state=TrialState.FAIL)
        again = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        again(self.study, self._frozen(trial))

    # ---------------------------------------------------------------- the whole queue

    def fail_stale(self) -> None:
        """Dead workers' trials (heartbeat older than GRACE_S) FAIL, and the storage's callback retries them."""
        fail_stale(self.study)

    def group_counts(self) -> dict[tuple, dict[str, int]]:
        """WAITING/RUNNING counts per process group: what still has to be drained, in a stable order."""
        from optuna.trial import TrialState

        counts: dict[tuple, dict[str, int]] = {}
        for trial in self.trials(TrialState.WAITING, TrialState.RUNNING):
            group = tuple(trial.user_attrs.get(PROCESS_KEY, ()))
            counts.setdefault(group, {"WAITING": 0, "RUNNING": 0})[trial.state.name] += 1
        return counts

    def running_numbers(self) -> set[int]:
        """The numbers of the RUNNING trials: whose MLflow runs may still be open."""
        from optuna.trial import TrialState

        return {trial.number for trial in self.trials(TrialState.RUNNING)}

    def status(self) -> dict[str, Any]:
        """done / running / stale / waiting / failed counts, live workers, and an ETA from the mean duration of
        finished trials; a RUNNING trial whose heartbeat stopped belongs to a dead worker and counts as stale, not
        running. No ETA while no worker is alive."""
        from optuna.trial import TrialState

        trials = self.trials()
        stale_ids = set(self.study._storage._get_stale_trial_ids(self.study._study_id))  # what fail_stale uses
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
        counts["eta_s"] = (0.0 if not left else None if mean is None or not counts["running"]
                           else mean * left / len(workers))
        counts["mean_trial_s"] = mean
        return counts


def fail_stale(study: Any) -> None:
    """Optuna's own sweep of a study (a run queue's or a search's): trials whose heartbeat is older than the grace
    period FAIL, and the storage's `RetryHeartbeatStaleTrialCallback` enqueues their retries."""
    import optuna

    optuna.storages.fail_stale_trials(study)
