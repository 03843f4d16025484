"""End to end: a real tiny study through `python -m harness run` into a real MLflow store."""

import os
import shutil

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

QUICK = REPO / "studies" / "quick.yaml"


def store(tmp_path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")



@pytest.mark.slow
def test_quick_study_lands_in_mlflow_and_reruns_add_nothing(tmp_path, cli, in_process):
    shutil.copy(QUICK, tmp_path / "quick.yaml")
    first = cli("run", "quick.yaml", "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6/6 runs finished" in first.stdout
    assert "augmentation.enabled" in first.stdout and "Brown" in first.stdout

    client = store(tmp_path)
    experiment = client.get_experiment_by_name("quick")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "study"]
    children = [r for r in runs if r.data.tags.get("harness.role") == "training"]
    assert len(parents) == 1 and len(children) == 6
    assert {r.info.status for r in children} == {"FINISHED"}
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert len(child.data.tags["harness.weights_hash"]) == 64
    assert child.data.tags["env.tensorflow"] and child.data.tags["env.git_commit"]
    assert child.data.tags["determinism.actual.op_determinism"] == "True"
    assert child.data.params["model.filters"] == "16" and "seeds.init" in child.data.params
    assert min(c.data.metrics["accuracy"] for c in children) >= 0.8  # the demo shows a network that learns
    assert child.data.metrics["wall_time_s"] > 0
    # the worker's CPU time over the training: every thread, so at most all cores for the whole training
    assert 0 < child.data.metrics["cpu_time_s"] <= (os.cpu_count() or 1) * child.data.metrics["wall_time_s"] + 1
    curve = client.get_metric_history(child.info.run_id, "epoch_val_accuracy")
    assert [m.step for m in curve] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"predictions.csv", "config.json"} <= artifacts
    assert "study.yaml" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    queue = optuna.load_study(study_name="quick", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert sorted(t.params["augmentation.enabled"] for t in queue.trials) == ["off"] * 3 + ["on"] * 3  # dashboard

    again = cli("run", "quick.yaml", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(client.search_runs([experiment.experiment_id])) == 7

    code, out, _ = in_process("report", "quick.yaml", "--delta-pp", "2")
    assert code == 0 and "augmentation.enabled" in out
    report_md = (tmp_path / "reports/quick/report.md").read_text()
    assert report_md.removeprefix("# Study 'quick'\n\n").startswith("## Verdict")
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/report.json"} <= parent_artifacts

    assert in_process("export", "quick", "--out", "out/runs.csv")[0] == 0
    assert in_process("report", "--runs", "out/runs.csv", "--out", "table-report")[0] == 0
    assert (tmp_path / "table-report/flipped.png").exists() is False  # no images without the spec
    assert (tmp_path / "table-report/churn.png").exists()


DIVERGING = """
name: diverging
data: {source: synthetic, n: 200, seed: 0}
repeats: 1
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  training: {optimizer: sgd, learning_rate: 0.01}
  stages: {train: {pipeline: [], epochs: 2}}
factors:
  training.learning_rate: [0.01, 1.0e+12]
"""


@pytest.mark.slow
def test_diverging_run_is_recorded_failed_and_the_study_goes_on(tmp_path, cli, in_process):
    (tmp_path / "d.yaml").write_text(DIVERGING)
    done = cli("run", "d.yaml", "--no-progress")
    assert done.returncode == 1, done.stderr[-3000:]  # a failed training: exit 1, its reason on stderr
    assert "1/2 runs finished" in done.stdout
    assert "failed: " in done.stderr and "loss became nan" in done.stderr.lower()
    client = store(tmp_path)
    experiment = client.get_experiment_by_name("diverging")
    children = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'training'")
    by_status = {r.info.status: r for r in children}
    assert set(by_status) == {"FINISHED", "FAILED"}
    assert "nan" in by_status["FAILED"].data.tags["harness.failure_reason"].lower()
    again = cli("run", "d.yaml", "--no-progress")
    assert again.returncode == 1  # the failed run stays failed (not retried): still reported
    assert len(client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'training'")) == 2

    # an edited spec: its report covers only the runs it plans, and its parent's study.yaml is the new text
    edited = DIVERGING.replace("[0.01, 1.0e+12]", "[0.01, 0.02]").replace("repeats: 1", "repeats: 2")
    (tmp_path / "d.yaml").write_text(edited)
    assert cli("run", "d.yaml", "--no-progress").returncode == 0
    code, out, _ = in_process("report", "d.yaml")
    assert code == 0 and "1 run(s) of earlier versions of the spec left out" in out
    assert len((tmp_path / "reports/diverging/runs.csv").read_text().strip().splitlines()) == 1 + 4
    parent = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'study'")[0]
    assert (tmp_path / client.download_artifacts(parent.info.run_id, "study.yaml", str(tmp_path))).read_text() == edited

    # a factor added at the base's value reuses every run: their rows carry its level, which no tag of theirs has
    (tmp_path / "d.yaml").write_text(edited + "  model.filters: [4]\n")
    assert in_process("export", "d.yaml", "--out", "added/runs.csv")[0] == 0
    added = pd.read_csv(tmp_path / "added/runs.csv")
    assert len(added) == 4 and added["model.filters"].tolist() == [4] * 4


BACKENDS = """
name: backends
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 1}}
factors:
  backend: [tensorflow, jax]
"""


@pytest.mark.slow
def test_backend_is_a_factor_each_run_in_its_own_process(tmp_path, cli, in_process):
    pytest.importorskip("jax")
    (tmp_path / "b.yaml").write_text(BACKENDS)
    done = cli("run", "b.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4/4 runs finished" in done.stdout and "backend (2 levels)" in done.stdout
    client = store(tmp_path)
    runs = client.search_runs(
        [client.get_experiment_by_name("backends").experiment_id], "tags.`harness.role` = 'training'"
    )
    actual = {
        (r.data.tags["factor.backend"], r.data.tags["determinism.actual.backend"], r.data.tags["env.keras_backend"])
        for r in runs
    }
    assert actual == {("tensorflow", "tensorflow", "tensorflow"), ("jax", "jax", "jax")}
    assert in_process("report", "b.yaml")[0] == 0
    assert "backend" in (tmp_path / "reports/backends/report.md").read_text()
