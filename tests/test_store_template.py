"""A new MLflow store starts as a copy of a migrated template (`files.sqlite_from_template`), not through a hundred
migrations: it must be exactly the store MLflow would have made, in its own folder, even when several processes
create it at once or the cache cannot be written."""

import sqlite3
import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from harness import tracking


def schema(path) -> list[tuple]:
    """Tables, indexes and the alembic version. Each statement's lines are sorted: MLflow's own migrations write a
    table's CHECK constraints in an order that varies from one process to the next (two migrated stores differ)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        version = db.execute("SELECT * FROM alembic_version").fetchall()
    return [(kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in rows] + version


def test_a_store_copied_from_the_template_is_the_store_mlflow_makes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tracking.connect(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")  # builds the template
    assert [p.name for p in (tmp_path / "cache/harness").iterdir()] == [f"mlflow-{mlflow.__version__}.db"]
    client = tracking.connect(f"sqlite:///{tmp_path / 'copied' / 'mlflow.db'}")
    migrated = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'migrated.db'}").search_experiments()
    assert schema(tmp_path / "copied/mlflow.db") == schema(tmp_path / "migrated.db")
    # MLflow's Default experiment, made by MLflow for this store (not the template's): where MLflow puts it
    assert [(e.name, e.artifact_location) for e in client.search_experiments()] == \
        [(e.name, e.artifact_location) for e in migrated]
    exp_id = tracking.experiment_id(client, "s")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.5}
    assert client.get_experiment(exp_id).artifact_location == (tmp_path / "copied/artifacts").as_uri()


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    """Cold cache: every process builds a template and links a copy into place; one wins, none fails."""
    url = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = "import sys; from harness.tracking import connect; connect(sys.argv[1]).create_experiment(sys.argv[2])"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"}
    processes = [subprocess.Popen([sys.executable, "-c", code, url, f"e{i}"], stderr=subprocess.PIPE, text=True,
                                  env=env) for i in range(4)]
    errors = [p.communicate(timeout=180)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [e for e in errors if e][:1]
    names = {e.name for e in MlflowClient(tracking_uri=url).search_experiments()}
    assert names == {"Default", "e0", "e1", "e2", "e3"}
    assert sorted(f.name for f in (tmp_path / "new").iterdir()) == ["mlflow.db"]  # no copy left behind


def test_a_cache_that_cannot_be_written_leaves_the_usual_migrations(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    client = tracking.connect(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
