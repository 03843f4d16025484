"""What differs between two runs, and the study that separates it: pure, no training."""

import copy

import yaml

from harness.study.compare import RunRecord, block_sources, differences, explain_spec, plan_points
from harness.study.design import plan_runs
from harness.study.spec import parse_spec

RESOLVED = {
    "backend": "tensorflow",
    "model": {"filters": 8, "depth": 2, "kernel_size": 3, "dense_units": 32, "dropout": 0.1, "batch_norm": False,
              "head": "flatten"},
    "augmentation": {"enabled": False, "rotation": 0.05, "translation": 0.08, "zoom": 0.08},
    "training": {"batch_size": 64, "learning_rate": 0.001, "optimizer": "adam", "schedule": "constant",
                 "label_smoothing": 0.0, "precision": "float32"},
    "determinism": {"op_determinism": True, "env_flags": True, "intra_op_threads": 1, "inter_op_threads": 1,
                    "xla": False, "tf32": False},
    "evaluation": {"method": "holdout", "val_fraction": 0.2, "k": 5, "fold": 0},
    "seeds": {"init": 11, "order": 0, "augment": 0, "dropout": 0, "split": 0},
    "stages": [{"name": "train", "epochs": 2, "pipeline": []}],
}


def record(label: str, env: dict | None = None, **changes) -> RunRecord:
    resolved = copy.deepcopy(RESOLVED)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = resolved
        for part in path:
            node = node[part]
        node[last] = value
    return RunRecord(label, label, resolved, "fp", env or {"env.keras": "3.15.1"}, 0.9, label)


def test_differences_by_kind():
    a = record("A")
    b = record("B", env={"env.keras": "3.14.0"}, training__learning_rate=0.01, seeds__init=12)
    found = {d.key: d for d in differences(a, b)}
    assert set(found) == {"training.learning_rate", "seeds.init", "env.keras"}
    assert (found["training.learning_rate"].kind, found["training.learning_rate"].varied) == ("config", True)
    assert (found["seeds.init"].kind, found["seeds.init"].varied) == ("seed", False)
    assert (found["env.keras"].kind, found["env.keras"].varied) == ("environment", False)
    assert differences(a, record("A")) == []


def test_two_keys_cost_four_points_and_roles_point_at_twins():
    a, b = record("A"), record("B", training__learning_rate=0.01, model__filters=16)
    points, roles = plan_points(a, b, differences(a, b))
    assert list(points) == ["A", "B", "A+model.filters", "A+training.learning_rate"]
    assert roles["B-model.filters"] == "A+training.learning_rate"
    assert roles["B-training.learning_rate"] == "A+model.filters"


def test_one_key_is_a_and_b():
    a, b = record("A"), record("B", stages=[{"name": "train", "epochs": 4, "pipeline": []}])
    points, roles = plan_points(a, b, differences(a, b))
    assert list(points) == ["A", "B"] and roles["A+stages"] == "B" and roles["B-stages"] == "A"


def test_explain_spec_plans_paired_seed_blocks(tmp_path):
    a, b = record("A"), record("B", training__learning_rate=0.01, seeds__init=12)
    diffs = differences(a, b)
    spec = parse_spec(explain_spec("explain-a-b", a, b, diffs, 3, None), tmp_path / "explain.yaml")
    runs = plan_runs(spec, "fp", 8)
    assert len(runs) == 6 and spec.design == "listed"
    assert spec.base.seeds.fresh == ["init", "order", "augment", "dropout"]  # split stays: same images scored
    by_block = {}
    for run in runs:
        by_block.setdefault(run.replicate, set()).add(run.seed_block)
    assert all(len(blocks) == 1 for blocks in by_block.values())  # A and B share each block's seeds
    assert len({run.seed_block for run in runs}) == 3
    lr = {run.factors["candidate"]: run.config.training.learning_rate for run in runs}
    assert lr == {"A": 0.001, "B": 0.01}


def test_seeds_alone_freshen_only_those_that_differ():
    a, b = record("A"), record("B", seeds__init=12)
    assert block_sources(differences(a, b)) == ["init"]
    assert block_sources(differences(a, record("B", seeds__split=3, training__learning_rate=0.01))) == [
        "init", "order", "augment", "dropout", "split"]


def test_same_config_is_one_exact_rerun(tmp_path):
    a, b = record("A"), record("B", env={"env.keras": "3.14.0"})
    spec = yaml.safe_load(explain_spec("explain-a-b", a, b, differences(a, b), 5, None))
    assert spec["repeats"] == 1 and spec["base"]["seeds"]["fresh"] == [] and spec["base"]["seeds"]["init"] == 11


def test_a_key_on_one_side_only_is_named_not_varied():
    a, b = record("A"), record("B")
    del b.resolved["augmentation"]
    found = {d.key: d for d in differences(a, b)}
    assert not found["augmentation.enabled"].varied and found["augmentation.enabled"].b is None
    assert plan_points(a, b, list(found.values()))[0] == {"A": {}}


def test_a_run_that_stopped_on_a_plateau_is_retrained_with_its_criterion():
    """explain re-trains a stored run from its resolved config: the criterion comes back, not a fixed count."""
    from harness.study.compare import run_config
    from harness.study.spec import Plateau

    criterion = {"until": "plateau", "max": 30, "patience": 5, "monitor": "loss", "min_delta": 0.0}
    config = run_config(record("A", stages=[{"name": "train", "epochs": criterion, "pipeline": []}]))
    assert config.stages["train"].epochs == Plateau(**criterion)
