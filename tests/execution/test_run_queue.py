"""The run queue on a real Optuna SQLite storage: exactly-once claims, resume rules, stale-trial retry."""

import os
import threading
import time
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState

from harness.commands.run import status_line
from harness.errors import DiskWriteError, HarnessError
from harness.execution import claims, run_queue, runner
from tests.execution.queue_fakes import GROUP, fake_runs


def test_enqueue_skips_done_and_queued_runs(queue):
    assert queue.enqueue(fake_runs("a", "b", "c"), completed_elsewhere={"c"}) == 2
    assert queue.enqueue(fake_runs("a", "b", "c"), completed_elsewhere=set()) == 1  # c not queued yet
    assert sorted(t.user_attrs["run_key"] for t in queue.trials()) == ["a", "b", "c"]


def claim_in_threads(queue, make_claim, threads: int = 3) -> list[str]:
    """Run keys claimed (and told done) by `threads` concurrent workers, each with its own `make_claim()`."""
    claimed, lock = [], threading.Lock()

    def worker():
        claim = make_claim()
        while (trial := claim()) is not None:
            with lock:
                claimed.append(trial.user_attrs["run_key"])
            queue.study.tell(trial, 1.0)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return claimed


def test_each_trial_is_claimed_exactly_once_by_concurrent_workers(queue):
    queue.enqueue(fake_runs(*[f"k{i}" for i in range(12)]), set())
    claimed = claim_in_threads(queue, lambda: lambda: claims.claim(queue, GROUP))
    assert sorted(claimed) == sorted(f"k{i}" for i in range(12))
    assert queue.status()["done"] == 12


def test_claimers_keep_their_list_and_still_claim_each_trial_once(queue, monkeypatch):
    queue.enqueue(fake_runs(*[f"k{i}" for i in range(12)]), set())
    listings = []
    list_waiting = claims.Claimer._list_waiting

    def counted(self):
        listings.append(1)
        return list_waiting(self)

    monkeypatch.setattr(claims.Claimer, "_list_waiting", counted)
    claimed = claim_in_threads(queue, lambda: claims.Claimer(queue, GROUP).claim)
    assert sorted(claimed) == sorted(f"k{i}" for i in range(12))
    assert len(listings) < 12  # the waiting list is not re-read for every claim
    late = claims.Claimer(queue, GROUP)
    assert late.claim() is None
    queue.enqueue(fake_runs("late"), set())
    assert late.claim().user_attrs["run_key"] == "late"  # an empty copy is listed again


def test_other_process_groups_are_not_claimed(queue):
    queue.enqueue(fake_runs("a"), set())
    assert claims.claim(queue, ["tensorflow", False, True, 0, 0, False]) is None
    assert claims.claim(queue, GROUP) is not None


def test_real_failures_are_final_and_killed_runs_come_back(queue):
    queue.enqueue(fake_runs("nan", "killed"), set())
    first, second = claims.claim(queue, GROUP), claims.claim(queue, GROUP)
    by_key = {t.user_attrs["run_key"]: t for t in (first, second)}
    by_key["nan"].set_user_attr(run_queue.REAL_FAILURE, "loss became nan")
    queue.study.tell(by_key["nan"], state=TrialState.FAIL)
    queue.study.tell(by_key["killed"], state=TrialState.FAIL)  # interrupted: no recorded reason
    assert queue.enqueue(fake_runs("nan", "killed"), set()) == 1
    counts = queue.status()
    assert (counts["failed"], counts["killed_retried"], counts["waiting"]) == (1, 1, 1)


def test_a_dead_workers_trial_is_retried_after_its_heartbeat_stops(queue):
    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    assert trial is not None and claims.claim(queue, GROUP) is None
    time.sleep(run_queue.GRACE_S + 1.5)  # the worker "died": no heartbeat
    queue.fail_stale()
    retry = claims.claim(queue, GROUP)
    assert retry is not None and retry.user_attrs["run_key"] == "a" and retry.number != trial.number


def test_a_live_workers_trial_is_not_taken(queue):
    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    with queue.heartbeat(trial):
        time.sleep(run_queue.GRACE_S + 1.5)
        queue.fail_stale()
        assert claims.claim(queue, GROUP) is None
    queue.study.tell(trial, 0.5)
    assert queue.status()["done"] == 1


def test_unreachable_storage_is_one_line(tmp_path):
    with pytest.raises(HarnessError, match="run storage 'postgresql://nobody@127.0.0.1:9/x' is unreachable"):
        run_queue.open_storage("postgresql://nobody@127.0.0.1:9/x")
    with pytest.raises(HarnessError, match="no study named 'missing'"):
        run_queue.RunQueue.open(run_queue.open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "missing", create=False)


def test_processes_creating_one_new_sqlite_store_at_once_all_succeed(tmp_path):
    """`run` starting while `status` (or a test) opens the same new store: both used to stamp the schema."""
    import subprocess
    import sys

    (tmp_path / "new").mkdir()  # a named store's folder must exist (test_bad_input.py); its file may not
    url = f"sqlite:///{tmp_path / 'new' / 'optuna.db'}"
    code = "import sys; from harness.execution.run_queue import open_storage; open_storage(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [e for e in errors if e][:1]
    assert sorted(f.name for f in (tmp_path / "new").iterdir()) == ["optuna.db"]  # no partial file left


def test_status_counts_a_dead_workers_trial_as_stale_and_gives_no_eta_without_a_live_worker(queue):
    queue.enqueue(fake_runs("done", "live", "dead", "waiting"), set())
    done = claims.claim(queue, GROUP)
    queue.study.tell(done, 1.0)
    live, _dead = claims.claim(queue, GROUP), claims.claim(queue, GROUP)
    assert live.user_attrs[run_queue.WORKER].endswith(f":{os.getpid()}")
    with queue.heartbeat(live):
        time.sleep(run_queue.GRACE_S + 1.5)  # `dead` sends no heartbeat
        counts = queue.status()
        assert (counts["running"], counts["stale"], counts["waiting"], counts["live_workers"]) == (1, 1, 1, 1)
        assert counts["eta_s"] is not None and counts["eta_s"] > 0
    queue.study.tell(live, 1.0)
    counts = queue.status()
    assert (counts["running"], counts["stale"], counts["live_workers"], counts["eta_s"]) == (0, 1, 0, None)
    line = status_line(counts)
    assert "0 running" in line and "1 stale" in line and "ETA none (no live worker)" in line


def test_an_interrupted_trial_is_given_back_as_waiting_without_counting_as_a_retry(queue):
    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    queue.give_back(trial)
    again = claims.claim(queue, GROUP)
    assert again.user_attrs["run_key"] == "a" and again.number != trial.number
    assert queue.retries_left(again)
    assert queue.enqueue(fake_runs("a"), set()) == 0  # a resume does not queue it twice


def test_out_of_memory_is_retried_at_most_max_retry_times(queue):
    queue.enqueue(fake_runs("a"), set())
    attempts = 0
    while (trial := claims.claim(queue, GROUP)) is not None:
        attempts += 1
        assert queue.retries_left(trial) == (attempts <= run_queue.MAX_RETRY)
        if queue.retries_left(trial):
            queue.retry(trial)
        else:
            trial.set_user_attr(run_queue.REAL_FAILURE, "MemoryError: out of memory")
            queue.study.tell(trial, state=TrialState.FAIL)
    assert attempts == 1 + run_queue.MAX_RETRY
    counts = queue.status()
    assert (counts["failed"], counts["killed_retried"], counts["waiting"]) == (1, run_queue.MAX_RETRY, 0)


def test_one_study_name_one_kind(queue):
    queue.claim_kind(run_queue.KIND_RUN)
    queue.claim_kind(run_queue.KIND_RUN)  # the same kind again is fine
    with pytest.raises(HarnessError, match="is a run study in the run storage .made by `harness run`."):
        queue.claim_kind(run_queue.KIND_TUNE)


class FlakyStorage:
    """record_heartbeat fails while `down` is set: a database restarting under a worker."""

    def __init__(self) -> None:
        self.down, self.beats = threading.Event(), 0

    def record_heartbeat(self, _trial_id: int) -> None:
        if self.down.is_set():
            raise ConnectionError("server closed the connection unexpectedly")
        self.beats += 1


@pytest.mark.parametrize("outage_s, lost", [(0.3, False), (1.2, True)])
def test_heartbeats_ride_out_a_short_outage_and_a_long_one_loses_the_lease(monkeypatch, outage_s, lost):
    monkeypatch.setattr(run_queue, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(run_queue, "GRACE_S", 0.8)
    storage = FlakyStorage()
    trial = SimpleNamespace(_trial_id=1, number=0)
    with run_queue.RunQueue(SimpleNamespace(_storage=storage)).heartbeat(trial) as lease:
        time.sleep(0.2)
        storage.down.set()
        time.sleep(outage_s)
        storage.down.clear()
        beats_after = storage.beats
        time.sleep(0.3)
        assert storage.beats > beats_after, "beating stopped after the outage"
        assert lease.lost is lost


class FailingAttached:
    """A worker's attached study whose training meets an error of the harness or the machine."""

    def __init__(self, queue, error: Exception) -> None:
        self.queue, self.error = queue, error

    def train_trials(self, claimed, retry_out_of_memory, on_result) -> None:
        raise self.error


@pytest.mark.parametrize("error", [DiskWriteError("mlruns/cache/x.npy", "No space left on device"),
                                   OSError(5, "Input/output error")])
def test_an_error_of_the_harness_during_training_gives_the_trial_back(queue, error):
    """Not a property of the run: its trial comes back WAITING for the next worker, never FAILED and done."""
    from harness.study.spec import RunConfig

    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    run = SimpleNamespace(run_key="a", factors={}, config=RunConfig())
    with pytest.raises(type(error)):
        runner.GroupWorker(FailingAttached(queue, error), [run]).execute([trial], {"a": run})
    state = run_queue.QueueState.of(queue)
    assert state.done == set() and state.queued == {"a"}
    assert [t.state for t in queue.trials()] == [TrialState.FAIL, TrialState.WAITING]
    assert run_queue.REAL_FAILURE not in queue.trials()[0].user_attrs
