"""Real signals: the whole study stops cleanly and no worker outlives its parent.

A scheduler, systemd or a CI timeout signals the parent alone (not its process group), and may SIGKILL it.
Either way every process the study started is gone within seconds, the interrupted run is KILLED in MLflow,
its trial is WAITING in the queue again, and a rerun trains every run exactly once. The supervisor is tested
with a stand-in training (tests/execution/stoppable.py, no TensorFlow), then `harness run` end to end.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness import signals
from harness.execution import workers
from tests.conftest import REPO, run_cli
from tests.execution.stoppable import alive, fake_training, pids, timed_work

SPEC = """
name: signals
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 200}}
"""
# 200 epochs: the stop lands 1 s into the first training and ends it at that epoch's end, so the length costs
# nothing; with 15 a training took under 2 s once fit stopped stalling at its end, and the stop could land after
# both had finished (no KILLED run to check)


@pytest.fixture
def parent_handlers():
    previous = signals.install_parent()
    yield
    signals.restore(previous)
    signals.STOPPING.clear()
    signals._RECEIVED.clear()


def when_started(out: Path, count: int, then) -> None:
    def wait() -> None:
        deadline = time.monotonic() + 60
        while len(pids(out, "started")) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        then()

    threading.Thread(target=wait, daemon=True).start()


@pytest.mark.parametrize("signum", list(signals.STOP_SIGNALS), ids=lambda s: s.name)
def test_supervise_stops_every_worker_at_an_epoch_end_when_the_parent_alone_is_signalled(tmp_path, signum,
                                                                                         parent_handlers):
    when_started(tmp_path, 2, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(signals.Interrupted) as stopped:
        workers.supervise(fake_training, lambda _index: (str(tmp_path),), 2, work_left=lambda: True,
                          on_tick=lambda: None, replacements=4)
    assert stopped.value.exit_code == 128 + signum
    started = pids(tmp_path, "started")
    assert len(started) == 2 and pids(tmp_path, "stopped") == started  # stopped cleanly, none replaced
    assert not [pid for pid in started if alive(pid)]


def test_a_worker_that_ends_gives_its_place_to_waiting_work_while_the_other_still_runs(tmp_path):
    """How `run` drains one process group after another: a worker that runs out of its group's trials exits,
    and a new worker for the next group starts beside the one still training the last trial of the first."""
    # (name, 0.1-s epochs, until): handed out in this order; "slow" runs until "next" has started (at most 120 s)
    work = [("slow", 1200, "next.start"), ("quick", 1, ""), ("next", 1, "")]

    def args_of(_index: int) -> tuple:
        return str(tmp_path), *work.pop(0)

    workers.supervise(timed_work, args_of, 2, work_left=lambda: bool(work), on_tick=lambda: None,
                      more_work=lambda: bool(work))
    assert not work
    times = {path.name: float(path.read_text()) for suffix in ("start", "end") for path in tmp_path.glob(f"*.{suffix}")}
    # the freed place went to waiting work while "slow" still ran (it did not run out its 120 s waiting)
    assert times["next.start"] < times["slow.end"] < times["slow.start"] + 100


def test_a_worker_stopped_on_its_own_is_not_replaced_and_the_study_stops(tmp_path, parent_handlers):
    when_started(tmp_path, 1, lambda: os.kill(next(iter(pids(tmp_path, "started"))), signal.SIGTERM))
    with pytest.raises(signals.Interrupted) as stopped:
        workers.supervise(fake_training, lambda _index: (str(tmp_path),), 1, work_left=lambda: True,
                          on_tick=lambda: None, replacements=4)
    assert stopped.value.exit_code == 143 and len(pids(tmp_path, "started")) == 1


def test_workers_of_a_sigkilled_parent_stop_at_an_epoch_end_and_exit(tmp_path):
    code = ("import sys; from harness.execution import workers; from tests.execution.stoppable import fake_training;"
            "workers.supervise(fake_training, lambda i: (sys.argv[1],), 2, work_left=lambda: 1, on_tick=lambda: 0)")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while len(pids(tmp_path, "started")) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    parent.kill()
    parent.wait()
    started, deadline = pids(tmp_path, "started"), time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(started) == 2 and not [pid for pid in started if alive(pid)]
    assert pids(tmp_path, "stopped") == started  # the kernel's SIGTERM, handled like any stop


@pytest.fixture
def study_dir(tmp_path):
    (tmp_path / "signals.yaml").write_text(SPEC)
    return tmp_path


def start_run(study_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "signals.yaml", "--no-progress"],
        cwd=study_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a signal to the parent reaches the parent only, as `kill PID` does
    )


def trials(study_dir: Path) -> list:
    return optuna.load_study(study_name="signals", storage=f"sqlite:///{study_dir / 'mlruns/optuna.db'}").trials


def wait_for_training(study_dir: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        if not (study_dir / "mlruns/optuna.db").exists():
            continue
        try:
            if any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials(study_dir)):
                time.sleep(1)  # into its epochs
                return
        except (KeyError, RuntimeError):  # store or study not created yet
            continue
    raise AssertionError(f"no training started: {process.communicate()[1][-2000:] if process.poll() else ''}")


def processes_in(folder: Path) -> list[str]:
    """Live processes whose working folder is `folder`: the study's parent, workers, multiprocessing helpers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder and (entry / "stat").read_text().split()[2] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
                found.append(f"{entry.name}: {command!r}")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def left_after(folder: Path, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (found := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def assert_stopped_cleanly(study_dir: Path, reason: str) -> None:
    """The interrupted training is KILLED with its reason, no training is RUNNING; its trial waits again."""
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlruns/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("signals").experiment_id])
    children = [r for r in runs if r.data.tags.get("harness.role") == "training"]
    killed = [r for r in children if r.info.status == "KILLED"]
    assert len(killed) == 1 and reason in killed[0].data.tags["harness.failure_reason"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    states = Counter(t.state for t in trials(study_dir))
    finished = sum(r.info.status == "FINISHED" for r in children)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.FAIL] == 1
    assert states[TrialState.WAITING] == 2 - finished and states[TrialState.COMPLETE] == finished


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signalled_or_killed_parent_stops_the_study_and_leaves_no_process(study_dir, signum):
    """SIGTERM: the parent stops its workers and exits 143. SIGKILL: the kernel sends the worker SIGTERM."""
    process = start_run(study_dir)
    wait_for_training(study_dir, process)
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=90)  # the worker shares its stderr: this waits for it too
    took = time.monotonic() - sent
    assert process.returncode == (128 + signum if signum != signal.SIGKILL else -signum), stderr[-2000:]
    assert left_after(study_dir, 5) == []
    assert took < 60, f"{took:.1f} s from {signum.name} to exit"
    assert_stopped_cleanly(study_dir, "interrupted (SIGTERM)")
    status = run_cli("status", "signals", cwd=study_dir, timeout=120)
    assert status.returncode == 0 and "0 running on 0 live worker(s)" in status.stdout, status.stdout
    assert "ETA none (no live worker)" in status.stdout
    if signum == signal.SIGTERM:
        assert stderr.strip().splitlines()[-1].startswith("interrupted (SIGTERM)") and "Traceback" not in stderr
        client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlruns/mlflow.db'}")
        experiment = client.get_experiment_by_name("signals").experiment_id
        assert client.search_runs([experiment], "tags.`harness.role` = 'study'")[0].info.status == "KILLED"
