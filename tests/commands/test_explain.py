"""`harness explain A B` end to end: a real digits study through the CLI into a real MLflow store, then the
question as users ask it. One study (6 trainings) serves every case; bad inputs run in-process through `main`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import REPO, run_cli, run_study

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("explain")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    shutil.copytree(REPO / "studies" / "models", root / "models")
    # studies/learning-rate.yaml, the README's example: one at a time from lr 0.005 with a fresh init seed per
    # replicate: lr 0.0003 (a large effect) and `fresh: []` (two identically configured, so bit-identical, runs)
    shutil.copy(REPO / "studies" / "learning-rate.yaml", root / "lr.yaml")
    client, trained = run_study(root, "lr.yaml", "learning-rate")
    runs = {}
    for run in trained:
        tags = run.data.tags
        level = ("slow" if tags["factor.training.learning_rate"] == "0.0003"
                 else "same" if tags["factor.seeds.fresh"] == "none" else "base")
        runs[(level, int(tags["harness.replicate"]))] = run.info.run_id
    return {"root": root, "runs": runs, "client": client, "parent": client.search_runs(
        [trained[0].info.experiment_id], "tags.`harness.role` = 'study'")[0].info.run_id}


def explain_json(root: Path, out: str) -> dict:
    return json.loads((root / out / "explain.json").read_text())


def test_learning_rate_first_seed_within_noise(study):
    root, runs = study["root"], study["runs"]
    start = time.monotonic()
    done = run_cli("explain", runs[("slow", 0)], runs[("base", 1)], "--repeats", "3", "--out", "ex-lr",
                   "--no-progress", cwd=root)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    ex = explain_json(root, "ex-lr")
    first, second = ex["differences"][:2]
    assert first["key"] == "training.learning_rate" and first["varied"]
    assert first["ci_pp"][0] > 0  # 0.0003 → 0.005 helps, and its interval excludes 0
    assert second["kind"] == "seed" and second["key"] == "seeds.init"
    assert second["gap_percentile"] < 95  # the init seed's share is within seed noise
    assert ex["verdict"][1].startswith("training.learning_rate") and "beyond seed noise" in ex["verdict"][1]
    assert "within seed noise" in " ".join(ex["verdict"])
    assert ex["seed_noise_pp"] > 0 and ex["runs_trained"] == 6 and ex["divergence"] is None
    print(f"explain with R=3: {elapsed:.0f} s")  # the budget: under 4 minutes on 2 cores
    client = study["client"]
    parent = client.search_runs([client.get_experiment_by_name(ex["study"]).experiment_id],
                                "tags.`harness.role` = 'study'")[0]
    assert parent.info.run_name.startswith("explain:")
    assert {"report/explain.md", "report/explain.json"} <= {a.path for a in client.list_artifacts(
        parent.info.run_id, "report")}


def test_seeds_only_within_noise_with_percentile(study):
    root, runs = study["root"], study["runs"]
    done = run_cli("explain", runs[("base", 0)], runs[("base", 1)], "--repeats", "2", "--out", "ex-seed",
                   "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    ex = explain_json(root, "ex-seed")
    assert [d["kind"] for d in ex["differences"]] == ["seed"]
    assert ex["block_sources"] == ["init"] and ex["gap_percentile"] is not None
    assert "within seed noise" in ex["verdict"][1]


def test_bit_identical_runs_are_identical(study, monkeypatch, capsys):
    root, runs = study["root"], study["runs"]
    monkeypatch.chdir(root)
    assert main(["explain", runs[("same", 0)], runs[("same", 1)], "--out", "ex-same"]) == 0
    ex = explain_json(root, "ex-same")
    assert ex["identical"] and ex["differences"] == [] and ex["runs_trained"] is None
    assert "same training" in capsys.readouterr().out


def test_config_files_with_other_environments(study, tmp_path):
    """Two config files, same config, different recorded environments: the environment is named, not varied,
    and A's exact config is retrained here once."""
    client, run_id = study["client"], study["runs"][("base", 0)]
    config = json.loads(Path(client.download_artifacts(run_id, "config.json", str(tmp_path))).read_text())
    shutil.copytree(REPO / "studies" / "models", tmp_path / "models")
    tags = client.get_run(run_id).data.tags
    for name, keras_version in (("a", tags["env.keras"]), ("b", "3.9.0")):
        body = {"resolved": config["resolved"], "data": {"source": "digits"},
                "environment": {"env.keras": keras_version}, "accuracy": 0.9}
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    # the builder is found beside the file, under its logged name
    shutil.copy(REPO / "studies" / "models" / "digits_cnn.py", tmp_path / "digits_cnn.py")
    done = run_cli("explain", "a.json", "b.json", "--out", "ex-env", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ex = explain_json(tmp_path, "ex-env")
    assert [(d["key"], d["kind"], d["varied"]) for d in ex["differences"]] == [("env.keras", "environment", False)]
    assert ex["exact_rerun"]["weights_hash"] == tags["harness.weights_hash"]  # this machine reproduces the run
    assert "Not varied here: env.keras" in " ".join(ex["verdict"])


@pytest.mark.parametrize("case, expected", [
    ("unknown", "no run 0123456789abcdef0123456789abcdef"),
    ("parent", "is a study run, not a training"),
    ("foreign", "was not logged by harness"),
    ("garbage", "neither an MLflow run ID"),
    ("unreadable", "unreadable run config"),
    ("missing", "file not found"),
])
def test_bad_inputs_one_line_exit_2_nothing_written(study, case, expected, monkeypatch, capsys, tmp_path):
    root, runs, client = study["root"], study["runs"], study["client"]
    experiments = {e.name for e in client.search_experiments()}
    (tmp_path / "bad.yaml").write_text("resolved: [unclosed")
    other = {"unknown": "0123456789abcdef0123456789abcdef", "parent": study["parent"],
             "garbage": "not-a-run", "unreadable": str(tmp_path / "bad.yaml"), "missing": str(tmp_path / "no.json")}
    if case == "foreign":
        exp = client.get_experiment_by_name("someone-else") or client.get_experiment(
            client.create_experiment("someone-else"))
        other["foreign"] = client.create_run(exp.experiment_id).info.run_id
        experiments.add("someone-else")
    monkeypatch.chdir(root)
    before = sorted(p.name for p in root.iterdir())
    code = main(["explain", runs[("base", 0)], other[case], "--out", f"bad-{case}"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in root.iterdir()) == before
    assert {e.name for e in client.search_experiments()} == experiments


def test_no_train_takes_seed_noise_from_the_store(study, monkeypatch, capsys):
    """--no-train: A's replicates in the store (its config, other init seeds) give the noise; nothing trains."""
    root, runs, client = study["root"], study["runs"], study["client"]
    experiments = {e.name for e in client.search_experiments()}
    monkeypatch.chdir(root)
    assert main(["explain", runs[("base", 0)], runs[("base", 1)], "--no-train", "--out", "ex-store"]) == 0
    ex = explain_json(root, "ex-store")
    assert ex["noise_from_store"] and ex["runs_trained"] == 0 and ex["seed_noise_pp"] > 0
    assert ex["gap_percentile"] is not None and "from the store" in " ".join(ex["verdict"])
    assert {e.name for e in client.search_experiments()} == experiments  # no explain study was made
