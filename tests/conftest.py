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


@pytest.fixture
def cli(tmp_path):
    """`cli("run", "spec.yaml")` runs `python -m harness ...` inside tmp_path."""

    def call(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, timeout=timeout)

    return call


@pytest.fixture
def real_train_csv() -> Path:
    path = SHARED_DATA / "train.csv.gz"
    if not path.exists():
        pytest.skip(f"real contest data not present at {path}")
    return path
