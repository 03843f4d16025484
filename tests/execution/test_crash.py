"""SIGKILL at several points of a study, then resume: every run finishes exactly once, the killed ones stay visible.

The kill comes from the harness itself (HARNESS_KILL_AT=point:marker, fired once), so it lands exactly at the
point under test: while the preprocessing cache entry is being written, during epoch 1, right after a
mid-training checkpoint, while logging to MLflow.
"""

import os
from collections import Counter

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness import tracking
from harness.training import checkpoint
from tests.conftest import run_cli

SPEC = """
name: crash
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [stretch], epochs: 2}}
"""


def run_killed_once(tmp_path, *points: str, extra: tuple[str, ...] = (), timeout: int = 600):
    """`harness run` with each of `points` firing once (a marker file per point records that it did)."""
    os.environ["HARNESS_KILL_AT"] = ",".join(f"{point}:{tmp_path / f'fired-{point}'}" for point in points)
    try:
        return run_cli("run", "crash.yaml", "--no-progress", *extra, cwd=tmp_path, timeout=timeout)
    finally:
        del os.environ["HARNESS_KILL_AT"]


def assert_each_run_finished_once(tmp_path, runs: int = 2, killed: int = 0, failed_trials: int = 0):
    """Every planned run FINISHED exactly once in MLflow and COMPLETE once in the queue; `killed` runs stay
    visible as KILLED, and each dead worker's trial as one FAIL (stale) trial."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    experiment = client.get_experiment_by_name("crash")
    children = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'training'")
    finished = Counter(r.data.tags["harness.run_key"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == runs and set(finished.values()) == {1}, finished
    assert sum(r.info.status == "KILLED" for r in children) == killed
    queue = optuna.load_study(study_name="crash", storage=f"sqlite:///{tmp_path / 'mlruns/optuna.db'}")
    complete = Counter(t.user_attrs["run_key"] for t in queue.trials if t.state == TrialState.COMPLETE)
    assert complete == finished
    assert sum(t.state == TrialState.FAIL for t in queue.trials) == failed_trials


@pytest.fixture
def study_dir(tmp_path):
    (tmp_path / "crash.yaml").write_text(SPEC)
    return tmp_path


@pytest.mark.slow
def test_killed_at_each_point_of_a_study_resumes_and_every_run_finishes_once(study_dir):
    """A SIGKILL at each point once, in one study of 4 runs:
    - the command itself, while it writes the preprocessing cache: the rerun resumes; the killed write's temp
      file is left behind and never read;
    - a worker right after its claim, before the first heartbeat: the trial must go stale like any dead worker's
      (it hung `run` for ever while the first heartbeat came after the claim);
    - a worker during epoch 1 and while logging to MLflow: the run stays visible as KILLED and is trained again
      (the one killed while logging resumes from its last checkpoint, the end, and trains nothing);
    - a worker right after its checkpoint of epoch 1: the retry resumes there;
    - a worker between MLflow's FINISHED and the queue's COMPLETE: the retried trial finds the logged run and
      trains nothing.
    Each dead worker is replaced (2 workers); each killed trial fails stale and is retried."""
    (study_dir / "crash.yaml").write_text(SPEC.replace("repeats: 2", "repeats: 4"))
    killed = run_killed_once(study_dir, "atomic-write")
    assert killed.returncode == -9 and (study_dir / "fired-atomic-write").exists()

    points = ("claimed", "epoch", "checkpoint", "logging", "finished")
    os.environ[checkpoint.EVERY_S_ENV] = "0"  # a checkpoint after every epoch
    try:
        done = run_killed_once(study_dir, *points, extra=("--workers", "2"))
    finally:
        del os.environ[checkpoint.EVERY_S_ENV]
    assert done.returncode == 0, done.stderr[-3000:]
    assert [point for point in points if not (study_dir / f"fired-{point}").exists()] == [], "points never reached"
    assert "4/4 runs finished" in done.stdout
    assert_each_run_finished_once(study_dir, runs=4, killed=3, failed_trials=5)
    assert_killed_runs_resumed_from_their_checkpoints(study_dir)
    cache = study_dir / "mlruns/cache"
    assert len(list(cache.rglob(".*.tmp"))) == 1  # the killed write's temp file: left behind, never read
    entries = list(cache.rglob("*.npy"))
    assert len(entries) == 1 and np.load(entries[0]).shape == (200, 28, 28)


def assert_killed_runs_resumed_from_their_checkpoints(study_dir) -> None:
    """The run killed while logging resumes at its last epoch and trains nothing ('after epoch 2'); the run killed
    after its epoch-1 checkpoint picks up there ('after epoch 1', or 'after epoch 2' when the logging kill met it
    too). tests/training/test_checkpoint.py shows that a resumed training ends with the uninterrupted weights."""
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlruns/mlflow.db'}")
    experiment = client.get_experiment_by_name("crash")
    resumed = client.search_runs([experiment.experiment_id], "tags.`harness.resumed` LIKE 'after epoch %'")
    tags = sorted(run.data.tags["harness.resumed"] for run in resumed)
    assert all(run.info.status == "FINISHED" for run in resumed)
    assert tags in (["after epoch 1", "after epoch 2"], ["after epoch 2"]), tags
    table = tracking.runs_table(client, experiment.experiment_id)
    assert sorted(table["resumed"].dropna()) == tags  # and the runs table says so
    assert list((study_dir / "mlruns/checkpoints").glob("*.npz")) == []  # none left once every run is logged


@pytest.mark.slow
def test_ctrl_c_marks_the_current_run_and_a_second_run_resumes_it_from_its_last_epoch(study_dir):
    """The Ctrl-C must land inside the first training: at 30 epochs it lasts ~6 s idle, while the poll below
    sees it start within a fraction of a second (12 epochs, ~2 s, let a loaded machine finish it first)."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    (study_dir / "crash.yaml").write_text(SPEC.replace("epochs: 2", "epochs: 30"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "crash.yaml", "--no-progress"],
        cwd=study_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    storage = f"sqlite:///{study_dir / 'mlruns/optuna.db'}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a training is under way
        time.sleep(0.2)
        if not (study_dir / "mlruns/optuna.db").exists():
            continue
        try:
            trials = optuna.load_study(study_name="crash", storage=storage).trials
        except KeyError:  # the study is not created yet
            continue
        if any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials):
            break
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlruns/mlflow.db'}")
    experiment = client.get_experiment_by_name("crash")
    runs = client.search_runs([experiment.experiment_id])
    statuses = Counter(r.info.status for r in runs)
    # the interrupted training and the study parent
    assert statuses["KILLED"] == 2 and statuses["RUNNING"] == 0, [(r.info.status, r.data.tags) for r in runs]

    resumed = run_cli("run", "crash.yaml", "--no-progress", cwd=study_dir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2/2 runs finished" in resumed.stdout
    # the interrupted training saved its epoch on the way out, and picked up there
    [picked_up] = client.search_runs([experiment.experiment_id], "tags.`harness.resumed` LIKE 'after epoch %'")
    assert picked_up.info.status == "FINISHED" and picked_up.data.metrics["epochs_trained"] == 30


@pytest.mark.slow
def test_out_of_memory_in_a_training_is_retried_then_failed_for_good(study_dir):
    """The documented policy: an OOM is a fault of the moment, retried like a dead worker's trial, at most
    MAX_RETRY times; then the run is FAILED with its reason and `run` exits 1."""
    from harness.execution.run_queue import MAX_RETRY, REAL_FAILURE

    (study_dir / "crash.yaml").write_text(SPEC.replace("repeats: 2", "repeats: 1").replace("epochs: 2", "epochs: 1"))
    os.environ["HARNESS_OOM_AT"] = "epoch"  # no marker: every attempt runs out of memory
    try:
        done = run_cli("run", "crash.yaml", "--no-progress", cwd=study_dir, timeout=600)
    finally:
        del os.environ["HARNESS_OOM_AT"]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "0/1 runs finished" in done.stdout and "MemoryError: injected by HARNESS_OOM_AT" in done.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlruns/mlflow.db'}")
    children = client.search_runs([client.get_experiment_by_name("crash").experiment_id],
                                  "tags.`harness.role` = 'training'", order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in children] == ["KILLED"] * MAX_RETRY + ["FAILED"]
    assert all(r.data.tags["harness.failure_reason"].endswith("; retried") for r in children[:-1])
    queue = optuna.load_study(study_name="crash", storage=f"sqlite:///{study_dir / 'mlruns/optuna.db'}")
    assert [REAL_FAILURE in t.user_attrs for t in queue.trials] == [False] * MAX_RETRY + [True]
    assert {t.state for t in queue.trials} == {TrialState.FAIL}
