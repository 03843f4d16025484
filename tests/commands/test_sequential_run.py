"""Seeds until the answer is known, end to end (issue 30): a digits study with `repeats: {min, max, resolution_pp}`,
one factor with a large effect and one with none. The large one settles at `min`; the null one trains on to `max`;
the parent run carries the rounds and why it stopped; a rerun resumes (trains nothing more); the report says how
many seeds each level used and why it stopped. 11 trainings of the tiny digits CNN, 2 epochs, 1 thread."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

SPEC = """name: seq-digits
data: {source: digits}
design: one_at_a_time
repeats: {min: 3, max: 4, resolution_pp: 1.0}
base:
  model: {builder: models/digits_cnn.py:build, args: {width: 8, dropout: 0.1}}
  training: {batch_size: 64, learning_rate: 0.005}
  seeds: {fresh: [init, order, dropout]}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 2}}
factors:
  training.learning_rate: [0.00001]   # barely trains in 2 epochs: a difference of tens of pp
  model.args.dropout: [0.1001]        # no effect; its runs still part ways with the base's
"""


def test_sequential_digits_study(tmp_path, in_process):
    shutil.copytree(REPO / "studies" / "models", tmp_path / "models")
    (tmp_path / "seq.yaml").write_text(SPEC)
    done = run_cli("run", "seq.yaml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "up to 12 runs (3 to 4 seeds per design point" in done.stderr
    assert any(f"round 1: 1 of 2 comparison(s) open (model.args.dropout {pair}): next round trains 2 more run(s) "
               "over 2 design point(s)" in done.stderr for pair in ("0.1 vs 0.1001", "0.1001 vs 0.1"))
    assert "round 2: stopped:" in done.stderr and "11/11 runs finished" in done.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seq-digits").experiment_id
    seeds: dict[tuple[str, str], int] = {}
    for run in client.search_runs([exp], "tags.`harness.role` = 'training'"):
        key = (run.data.tags["factor.training.learning_rate"], run.data.tags["factor.model.args.dropout"])
        # a builder's args are factors like any key: logged with the builder as params
        assert run.data.params["model.args.dropout"] == key[1]
        assert run.data.params["model.builder"].endswith("digits_cnn.py:build")
        seeds[key] = seeds.get(key, 0) + 1
        assert (run.data.tags.get("harness.base_point") == "true") == (key == ("0.005", "0.1"))  # the base config
    # the learning rate settled at min; dropout trained on (to its equivalence bound or max, both at 4 seeds here)
    assert seeds == {("0.005", "0.1"): 4, ("1e-05", "0.1"): 3, ("0.005", "0.1001"): 4}
    parent = client.search_runs([exp], "tags.`harness.role` = 'study'")[0]
    tags = parent.data.tags
    assert tags["harness.sequential.round"] == "2" and tags["harness.sequential.state"] in ("settled", "max_reached")
    assert tags["harness.sequential.reason"].startswith("stopped: ")
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "sequential.trainings")] == [9.0, 11.0]

    again = run_cli("run", "seq.yaml", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "round 3: stopped:" in again.stderr
    assert len(client.search_runs([exp], "tags.`harness.role` = 'training'")) == 11

    code, report, _ = in_process("report", "seq.yaml")
    assert code == 0
    seq = json.loads((tmp_path / "reports" / "seq-digits" / "report.json").read_text())["sequential"]
    by = {c["factor"]: c for c in seq["comparisons"]}
    assert by["training.learning_rate"]["state"] == "effect"
    assert by["model.args.dropout"]["state"] in ("no_effect", "open")
    assert seq["state"] == tags["harness.sequential.state"]
    used = report.split("Seeds per level: ")[1].split(".\n")[0]
    assert {part.split(": ")[0]: set(part.split(": ")[1].split(", ")) for part in used.split("; ")} == {
        "training.learning_rate": {"0.005 4", "1e-05 3"}, "model.args.dropout": {"0.1 4", "0.1001 4"}}
    assert ("every comparison is settled (2 of 2)" if seq["state"] == "settled"
            else "stopped at the maximum of 4 seeds with 1 of 2 comparison(s) still open") in report

    # runs logged before they carried `harness.base_point`: the spec at hand still names its base config
    for run in client.search_runs([exp], "tags.`harness.role` = 'training'"):
        if "harness.base_point" in run.data.tags:
            client.delete_tag(run.info.run_id, "harness.base_point")
    code, _, err = in_process("export", "seq.yaml", "--out", "runs.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "runs.csv", dtype=str).fillna("")
    base = (table["training.learning_rate"] == "0.005") & (table["model.args.dropout"] == "0.1")
    assert (table["base_point"] == "true").tolist() == base.tolist() and base.sum() == 4
