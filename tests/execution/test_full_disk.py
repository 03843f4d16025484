"""A full disk, for real: small tmpfs mounts under the cache and the artifact store fill up mid-study.

Each time `run` ends with one line naming what could not be written and exit 2, nothing half-written is
trusted (no cache entry, no FINISHED run without its files), and once there is room the same command resumes
and finishes every run exactly once. Mounting needs root with CAP_SYS_ADMIN; elsewhere the test skips. A worker
on another machine (a cold cache) meets a full disk through the fault hook (harness.files.FULL_AT_ENV) instead.
"""

import os
import subprocess
import sys
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO, run_cli

SPEC = """
name: full
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [stretch], epochs: 1}}
"""


@pytest.fixture
def small_disk():
    """`mount(folder, pages)`: a tmpfs of `pages` 4 KiB pages at `folder`; a file takes at least one."""
    mounted = []

    def mount(folder, pages: int = 1):
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={4 * pages}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (root with CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(folder)

    def unmount(folder):
        subprocess.run(["umount", str(folder)], check=True)
        mounted.remove(folder)

    mount.unmount = unmount
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)])


def one_line_error(done, naming: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and naming in errors[0] and "No space left on device" in errors[0], done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_nothing_half_written_and_resumes(tmp_path, small_disk):
    (tmp_path / "full.yaml").write_text(SPEC)
    cache, artifacts = tmp_path / "mlruns/cache", tmp_path / "mlruns/artifacts"

    small_disk(cache)
    one_line_error(run_cli("run", "full.yaml", "--no-progress", cwd=tmp_path), "mlruns/cache")
    assert not any(cache.iterdir()), "a partial cache entry was left behind"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    assert client.get_experiment_by_name("full") is None, "runs were stored before the cache was written"
    small_disk.unmount(cache)

    small_disk(artifacts, pages=3)  # the study's two spec files fit, a training's config and predictions do not
    one_line_error(run_cli("run", "full.yaml", "--no-progress", cwd=tmp_path), "artifacts of MLflow run")
    experiment = client.get_experiment_by_name("full").experiment_id
    children = client.search_runs([experiment], "tags.`harness.role` = 'training'")
    assert [r.info.status for r in children] == ["KILLED"], "the training that could not log must not be FINISHED"
    assert "could not write" in children[0].data.tags["harness.failure_reason"]
    small_disk.unmount(artifacts)

    resumed = run_cli("run", "full.yaml", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    children = client.search_runs([experiment], "tags.`harness.role` = 'training'")
    finished = Counter(r.data.tags["harness.run_key"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == 2 and set(finished.values()) == {1}
    queue = optuna.load_study(study_name="full", storage=f"sqlite:///{tmp_path / 'mlruns/optuna.db'}")
    assert len(queue.get_trials(states=(TrialState.COMPLETE,))) == 2


@pytest.mark.slow
def test_a_worker_whose_cache_write_meets_a_full_disk_exits_2_and_gives_its_run_back(tmp_path):
    """`harness worker` elsewhere has no warm cache: ENOSPC while it writes one is the machine's fault, not the
    run's, so the run is not FAILED and counted done (it was) but given back for the next worker."""
    from harness import tracking
    from harness.execution import prepared, run_queue, workers
    from harness.study.spec import load_spec

    home, remote = tmp_path / "home", tmp_path / "remote"
    (home / "mlruns").mkdir(parents=True)
    remote.mkdir()
    (home / "full.yaml").write_text(SPEC)
    spec = load_spec(home / "full.yaml")
    study = prepared.prepare(spec)  # what `run` does before its own workers start, minus the warm cache
    storage_url, tracking_uri = f"sqlite:///{home}/mlruns/optuna.db", f"sqlite:///{home}/mlruns/mlflow.db"
    client = tracking.connect(tracking_uri)
    queue = run_queue.RunQueue.open(run_queue.open_storage(storage_url), "full", create=True, kind=run_queue.KIND_RUN)
    experiment, _ = workers.publish(queue, spec, study.data, client, study.environments)
    queue.enqueue(study.runs, set())

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), "HARNESS_FULL_AT": "atomic-write"}
    done = subprocess.run([sys.executable, "-m", "harness", "worker", "--study", "full", "--storage", storage_url,
                           "--tracking-uri", tracking_uri, "--no-progress"], cwd=remote, env=env,
                          capture_output=True, text=True, timeout=600)
    one_line_error(done, "mlruns/cache")
    trials = queue.trials()
    assert not any(run_queue.REAL_FAILURE in t.user_attrs for t in trials), "a full disk blamed on the run"
    assert run_queue.QueueState.of(queue).done == set()
    assert [t.state for t in trials].count(TrialState.WAITING) == 2  # the one given back and the one not claimed
    children = client.search_runs([experiment], "tags.`harness.role` = 'training'")
    assert [r.info.status for r in children] == ["KILLED"]
    assert "No space left on device" in children[0].data.tags["harness.failure_reason"]
