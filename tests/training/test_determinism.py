"""With op determinism on (CPU), a run's weights depend only on its config: first, tenth, or fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
SPEC = """
name: det-test
repeats: 1
data: {source: synthetic, n: 300, seed: 1}
base:
  model: {filters: 4, depth: 1, dense_units: 16, dropout: 0.3}
  augmentation: {enabled: true}
  determinism: {op_determinism: true, intra_op_threads: 1, inter_op_threads: 1}
  seeds: {fresh: []}
  stages: {train: {pipeline: [stretch], epochs: 2}}
factors:
  seeds.order: [0, 1]
  model.dropout: [0.3, 0.5]
"""
# run 0: order 0, dropout .3 | run 1: order 0, dropout .5 | run 2: order 1, dropout .3 | run 3: order 1, dropout .5


def trained(spec_path: Path, *indices: int) -> dict[str, list[str]]:
    """{"hashes": weights hash per run, "model": 'built' or 'reused' per run}, trained in one fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(
        [sys.executable, str(HERE / "train_hashes.py"), str(spec_path), *map(str, indices)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=spec_path.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def hashes(spec_path: Path, *indices: int) -> list[str]:
    return trained(spec_path, *indices)["hashes"]


@pytest.mark.slow
def test_same_config_same_weights_in_any_position_and_process(tmp_path):
    spec_path = tmp_path / "det.yaml"
    spec_path.write_text(SPEC)
    sequence = trained(spec_path, 0, 3, 1, 0, 2)
    in_sequence, fresh = sequence["hashes"], hashes(spec_path, 2, 0)
    # runs 0 and 2 share an architecture (dropout .3), runs 1 and 3 another: the later ones reuse the compiled
    # model, so equal hashes below also say that a reused model trains exactly as a fresh build
    assert sequence["model"] == ["built", "built", "reused", "reused", "reused"]
    first, other_order = in_sequence[0], in_sequence[4]
    assert in_sequence[3] == first, "same config gave different weights after other runs (reused model)"
    assert fresh[1] == first, "same config gave different weights in a fresh process"
    assert fresh[0] == other_order, "run 2 differs between processes (built there, reused here)"
    assert other_order != first, "a different data-order seed should change the weights"
    assert len(set(in_sequence[:3])) == 3


@pytest.mark.slow
def test_runs_trained_by_the_commands_fork_server_equal_runs_in_a_fresh_process(tmp_path):
    """`harness run` forks its training processes from a server that imported TensorFlow before any of them
    configured it; each must train exactly as a process that started from nothing."""
    from mlflow import MlflowClient

    from harness.execution.prepared import prepare
    from harness.study.spec import load_spec
    from tests.conftest import run_cli

    spec_path = tmp_path / "det.yaml"
    spec_path.write_text(SPEC)
    done = run_cli("run", "det.yaml", "--no-progress", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("det-test").experiment_id],
                              "tags.`harness.role` = 'training'")
    forked = {r.data.tags["harness.run_key"]: r.data.tags["harness.weights_hash"] for r in runs}
    planned = prepare(load_spec(spec_path)).runs
    assert len(forked) == 4 and hashes(spec_path, 3, 0) == [forked[planned[3].run_key], forked[planned[0].run_key]]
