"""End to end: a real tiny study through `python -m harness run` into a real MLflow store."""

import shutil

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

QUICK = REPO / "studies" / "quick.yaml"


def store(tmp_path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


@pytest.mark.slow
def test_quick_study_lands_in_mlflow_and_reruns_add_nothing(tmp_path, cli):
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
    assert 0.0 <= child.data.metrics["accuracy"] <= 1.0 and child.data.metrics["wall_time_s"] > 0
    curve = client.get_metric_history(child.info.run_id, "epoch_val_accuracy")
    assert [m.step for m in curve] == [1, 2, 3, 4, 5]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"predictions.csv", "config.json"} <= artifacts
    assert "study.yaml" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}

    again = cli("run", "quick.yaml", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(client.search_runs([experiment.experiment_id])) == 7
