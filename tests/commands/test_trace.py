"""`harness explain` locates where two runs part: planted nondeterminism through `harness run` then `explain`.

One tiny study (tests/commands/planted/: 3 builders x 2 identically configured runs on the bundled 8x8 digits,
one epoch, one thread) serves every case; each explain replays both runs in two fresh processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import run_cli, run_study

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trace")]
PLANTED = Path(__file__).parent / "planted"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace")
    shutil.copy(PLANTED / "builders.py", root / "builders.py")
    shutil.copy(PLANTED / "planted.yaml", root / "planted.yaml")
    client, trained = run_study(root, "planted.yaml", "planted")
    runs = {}
    for run in trained:
        builder = run.data.params["model.builder"].split(":")[1]  # clean, head_from_os, jitter_from_os
        runs[(builder, int(run.data.tags["harness.replicate"]))] = run
    return {"root": root, "runs": runs, "client": client}


def explain_json(root: Path, out: str) -> dict:
    return json.loads((root / out / "explain.json").read_text())


def run_id(study, name: str, replicate: int) -> str:
    return study["runs"][(name, replicate)].info.run_id


def test_head_seeded_from_the_os_parts_at_step_0(study, monkeypatch, capsys):
    root = study["root"]
    monkeypatch.chdir(root)
    assert main(["explain", run_id(study, "head_from_os", 0), run_id(study, "head_from_os", 1), "--no-train",
                 "--steps", "3", "--out", "ex-head"]) == 0
    ex = explain_json(root, "ex-head")
    assert ex["differences"] == []  # same config, seeds and environment: only the weights differ
    found = ex["divergence"]
    assert (found["step"], found["kind"], found["where"], found["op"]) == (0, "initial weights", "head", "Dense")
    assert found["variables"] == ["head/kernel"] and found["max_abs_diff"] > 0
    assert "seeds.initializer()" in found["cause"]
    assert found["from_a_weights"] == {"identical_through": 3}  # from equal weights nothing else parts them
    assert "initial weights (step 0)" in capsys.readouterr().out


def test_jitter_seeded_from_the_os_parts_at_step_1_forward(study):
    """Without --no-train: the explain study's parent run in MLflow carries the divergence."""
    root = study["root"]
    done = run_cli("explain", run_id(study, "jitter_from_os", 0), run_id(study, "jitter_from_os", 1), "--steps",
                   "3", "--out", "ex-jitter", "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    ex = explain_json(root, "ex-jitter")
    found = ex["divergence"]
    assert (found["step"], found["kind"], found["where"], found["op"]) == (1, "forward", "jitter",
                                                                           "RandomTranslation")
    assert found["max_abs_diff"] > 0 and "seeds.augment()" in found["cause"]
    assert ex["trace"]["probe_reproduces"] == {"A": True, "B": True}  # the step taken apart is fit's step
    assert "## Where they part" in (root / "ex-jitter" / "explain.md").read_text()
    client = study["client"]
    parent = client.search_runs([client.get_experiment_by_name(ex["study"]).experiment_id],
                                "tags.`harness.role` = 'study'")[0]
    assert parent.data.tags["harness.divergence.kind"] == "forward"
    assert parent.data.tags["harness.divergence.where"] == "jitter"


def test_bit_identical_runs_replay_identically(study, monkeypatch, capsys):
    root = study["root"]
    monkeypatch.chdir(root)
    a, b = run_id(study, "clean", 0), run_id(study, "clean", 1)
    assert main(["explain", a, b, "--trace", "--steps", "2", "--out", "ex-clean"]) == 0
    ex = explain_json(root, "ex-clean")
    assert ex["identical"] and ex["divergence"] is None and ex["trace"]["steps"] == 2
    assert "identical through 2 steps" in capsys.readouterr().out


def test_tensorflow_and_jax_part_at_their_initial_weights(study, tmp_path, monkeypatch):
    """The same config on two backends (a config file with `backend: jax`), --trace without training."""
    pytest.importorskip("jax")
    root, client = study["root"], study["client"]
    source = run_id(study, "clean", 0)
    config = json.loads(Path(client.download_artifacts(source, "config.json", str(tmp_path))).read_text())
    shutil.copy(PLANTED / "builders.py", tmp_path / "builders.py")
    body = {"resolved": {**config["resolved"], "backend": "jax"}, "data": {"source": "digits"},
            "data_fingerprint": study["runs"][("clean", 0)].data.tags["harness.data_fingerprint"]}
    (tmp_path / "jax.json").write_text(json.dumps(body))
    monkeypatch.chdir(root)
    assert main(["explain", source, str(tmp_path / "jax.json"), "--trace", "--no-train", "--steps", "2", "--out",
                 "ex-backends"]) == 0
    ex = explain_json(root, "ex-backends")
    assert [d["key"] for d in ex["differences"]] == ["backend"]
    found = ex["divergence"]
    assert (found["step"], found["kind"], found["where"]) == (0, "initial weights", "conv2d")
    assert found["max_abs_diff"] > 0 and "different backends (tensorflow vs jax)" in found["cause"]
    assert {side["backend"] for side in ex["trace"]["sides"].values()} == {"tensorflow", "jax"}
    then = found["from_a_weights"]  # from A's weights in both: the augmentation's random draws differ first
    assert (then["step"], then["kind"], then["where"]) == (1, "forward", "jitter") and then["max_abs_diff"] > 0
