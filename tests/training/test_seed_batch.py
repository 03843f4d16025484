"""Seed-batched training (`execution.batch_seeds`, jax): a run's weights depend only on its config and K, never on
the other runs in its batch or the process; each lane trains what the run trains alone; the queue hands a
worker a batch of one configuration; `run` and `report` treat the runs like any others."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient

from harness.errors import DiskWriteError, SpecError
from harness.execution import claims, run_queue
from harness.execution.prepared import prepare
from harness.study.design import process_key
from harness.study.spec import RunConfig, parse_spec
from harness.training import seed_batch
from tests.conftest import REPO

SPEC = """
name: seed-batch
data: {{source: synthetic, n: 200, seed: 3}}
repeats: 3
base:
  backend: jax
  execution: {{batch_seeds: {k}}}
  model: {{filters: 4, depth: 1, dense_units: 8, dropout: 0.2}}
  augmentation: {{enabled: true}}
  training: {{batch_size: 32, learning_rate: 0.01, schedule: cosine, label_smoothing: 0.1}}
  determinism: {{intra_op_threads: 1}}
  stages: {{first: {{pipeline: [], epochs: 1}}, second: {{pipeline: [stretch], epochs: 1}}}}
  stage_order: [first, second]
"""


def test_seed_batches_are_a_jax_setting_with_its_own_run_keys(tmp_path):
    with pytest.raises(SpecError, match="execution.batch_seeds > 1 trains on the jax backend"):
        parse_spec(SPEC.format(k=3).replace("backend: jax", "backend: tensorflow"), tmp_path / "s.yaml")
    batched = prepare(parse_spec(SPEC.format(k=3), tmp_path / "s.yaml")).runs
    alone = prepare(parse_spec(SPEC.format(k=1), tmp_path / "s.yaml")).runs
    assert batched[0].resolved()["execution"] == {"batch_seeds": 3} and "execution" not in alone[0].resolved()
    assert len({run.batch_key for run in batched}) == 1 and len({run.run_key for run in batched}) == 3
    assert {run.run_key for run in batched}.isdisjoint(run.run_key for run in alone)


def test_a_worker_claims_companions_of_its_own_seed_batch_only(tmp_path):
    queue = run_queue.RunQueue.open(run_queue.open_storage(f"sqlite:///{tmp_path / 'q.db'}"), "s", create=True)
    config = RunConfig(backend="jax", execution={"batch_seeds": 3})
    runs = [SimpleNamespace(run_key=f"{point}{rep}", batch_key=point, config=config)
            for point in "ab" for rep in range(3)]
    queue.enqueue(runs, set())
    claimer = claims.Claimer(queue, list(process_key(runs[0])))
    first = claimer.claim()
    point = first.user_attrs[run_queue.RUN_KEY][0]
    companions = claimer.claim_companions(first, 5)
    assert sorted(t.user_attrs[run_queue.RUN_KEY] for t in [first, *companions]) == [f"{point}{r}" for r in range(3)]
    rest = [claimer.claim(), claimer.claim(), claimer.claim(), claimer.claim()]
    other = "b" if point == "a" else "a"
    assert sorted(t.user_attrs[run_queue.RUN_KEY] for t in rest[:3]) == [f"{other}{r}" for r in range(3)]
    assert rest[3] is None


@pytest.mark.slow
def test_seed_batched_study_runs_reports_and_reproduces_in_fresh_processes(tmp_path, cli, in_process):
    pytest.importorskip("jax")
    (tmp_path / "s.yaml").write_text(SPEC.format(k=3))
    done = cli("run", "s.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3/3 runs finished" in done.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("seed-batch").experiment_id
    logged = {r.data.tags["harness.run_key"]: r for r in
              client.search_runs([experiment], "tags.`harness.role` = 'training'")}
    assert {r.data.tags["determinism.actual.model"] for r in logged.values()} == {"seed-batched: 3 runs in 3 lanes"}
    assert all(len(client.get_metric_history(r.info.run_id, "epoch_val_accuracy")) == 2 for r in logged.values())

    again = subprocess.run([sys.executable, str(REPO / "tests" / "seed_batch_hashes.py"), "s.yaml"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout.strip().splitlines()[-1])
    # another process, other companions and lanes, a batch padded to 3 lanes: the same weights
    hashes = {key: r.data.tags["harness.weights_hash"] for key, r in logged.items()}
    assert out["together"] == hashes
    assert {**out["regrouped"], **out["padded"]}.items() <= hashes.items() and len(out["regrouped"]) == 2
    # a lane trains what the run trains alone: same data order, seeds and optimizer; only kernels differ
    np.testing.assert_allclose(out["curves"]["lane"], out["curves"]["alone"], rtol=1e-4)
    # a diverging lane is a FAILED run with its reason, not an error of the batch
    assert [status for status, _ in out["diverging"]] == ["FAILED", "FAILED"]
    assert all(reason.startswith("loss became nan in epoch") for _, reason in out["diverging"]), out["diverging"]

    code, out, _ = in_process("report", "s.yaml")
    assert code == 0 and "vote of 3 runs" in out
    assert len((tmp_path / "reports/seed-batch/runs.csv").read_text().strip().splitlines()) == 1 + 3


@pytest.mark.parametrize("error, recorded", [(ValueError("a lane's model refused its input"), True),
                                             (DiskWriteError("mlruns/cache/x.npy", "No space left on device"), False),
                                             (OSError(5, "Input/output error"), False)])
def test_a_batch_records_its_own_failures_and_raises_the_harness_s(error, recorded, monkeypatch):
    """A model error fails every run of the batch, recorded; a full disk under the cache (or any error of the
    machine) is not the runs' failure: raised, so the worker gives the batch back and the runs are retried."""
    def broken(*_args):
        raise error

    monkeypatch.setattr(seed_batch, "Batch", broken)
    runs = [SimpleNamespace(name=f"r{i}") for i in range(3)]
    if recorded:
        results = seed_batch.train_batch(runs, np.arange(4), np.arange(4), images_for=None)
        assert [r.status for r in results] == ["FAILED"] * 3 and "refused its input" in results[0].failure_reason
    else:
        with pytest.raises(type(error)):
            seed_batch.train_batch(runs, np.arange(4), np.arange(4), images_for=None)
