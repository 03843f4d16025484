"""Shared fixtures: run the CLI in a fresh working folder, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as harness.tracking does; tests use MLflow directly too
SHARED_DATA = REPO.parent / "shared" / "data" / "dacon2020"


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def run_study(root: Path, spec: str, experiment: str) -> tuple:
    """`harness run SPEC` in `root` as a user runs it, then its store: (MlflowClient, the training runs)."""
    from mlflow import MlflowClient

    done = run_cli("run", spec, "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment).experiment_id
    return client, client.search_runs([exp], "tags.`harness.role` = 'training'")


@pytest.fixture
def cli(tmp_path):
    """`cli("run", "spec.yaml")` runs `python -m harness ...` inside tmp_path."""

    def call(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, timeout=timeout)

    return call


@pytest.fixture
def in_process(tmp_path, monkeypatch, capsys):
    """`in_process("report", ...)`: the CLI's `main` in tmp_path (or `cwd=`), without an interpreter's and
    MLflow's start-up: (exit code, stdout, stderr). Commands that train stay subprocesses (`cli`), as users run
    them; commands that only read the stores or refuse input can run here."""
    from harness.cli import main

    def call(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd or tmp_path)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def real_train_csv() -> Path:
    path = SHARED_DATA / "train.csv.gz"
    if not path.exists():
        pytest.skip(f"real contest data not present at {path}")
    return path
