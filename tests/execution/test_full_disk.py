"""A full disk, for real: small tmpfs mounts under the cache and the artifact store fill up mid-study.

Each time `run` ends with one line naming what could not be written and exit 2, nothing half-written is
trusted (no cache entry, no FINISHED run without its files), and once there is room the same command resumes
and finishes every run exactly once. Mounting needs root with CAP_SYS_ADMIN; elsewhere the test skips.
"""

import subprocess
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import run_cli

SPEC = """
name: full
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
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
