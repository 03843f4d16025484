"""tune: seed-robust selection on planted cases, search-space checks, and a real search + predict through the CLI."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from harness.analysis.selection import robust_selection
from harness.commands.predict import chosen_config
from harness.errors import SpecError
from harness.execution.search import check_search, make_pruner, planned_epochs, warmup_epochs
from harness.study.design import plan_runs
from harness.study.spec import RunConfig, parse_spec


def _reeval_table(means: dict[str, float], n: int, sigma: float, rng: np.random.Generator) -> pd.DataFrame:
    rows = [{"candidate": label, "status": "FINISHED", "accuracy": mean + rng.normal(0, sigma)}
            for label, mean in means.items() for _ in range(n)]
    return pd.DataFrame(rows)


def test_lucky_top_trial_is_flagged():
    """Five equal configs; the search's #1 is whichever drew the luckiest seed. Re-runs expose it."""
    rng = np.random.default_rng(3)
    sigma, true = 0.02, 0.80
    search = {f"c{i}": true + rng.normal(0, sigma) for i in range(5)}
    ranked = dict(sorted(search.items(), key=lambda kv: -kv[1])[:3])
    result = robust_selection(ranked, _reeval_table(dict.fromkeys(ranked, true), 10, sigma, rng), "candidate")
    top1 = result["candidates"][0]
    assert top1["winners_curse"] > 0.01  # searched score well above its re-run mean
    assert not result["top1_beats_all"]
    assert all(p["welch_p_holm"] > 0.05 for p in result["top1_vs_others"])
    assert "not beyond seed noise" in " ".join(result["verdict"])


def test_real_winner_is_confirmed():
    rng = np.random.default_rng(4)
    means = {"best": 0.85, "second": 0.80, "third": 0.79}
    table = _reeval_table(means, 10, 0.01, rng)
    result = robust_selection({"best": 0.86, "second": 0.81, "third": 0.80}, table, "candidate")
    assert result["top1_beats_all"] and result["robust_best"] == "best"
    row = result["candidates"][0]
    assert row["ci"][0] < 0.85 < row["ci"][1] and abs(row["winners_curse"] - 0.01) < 0.01


SPEC = """name: tq
data: {n: 300}
base:
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 3}}
search:
  n_trials: 6
  top_k: 2
  reeval_repeats: 2
  space:
    training.learning_rate: {type: float, low: 0.0005, high: 0.01, log: true}
    model.filters: {type: categorical, choices: [8, 16]}
"""


@pytest.mark.parametrize("space, expected", [
    ("determinism.op_determinism: {type: categorical, choices: [true, false]}", "fixed per training process"),
    ("model.widht: {type: int, low: 8, high: 32}", "search.space.model.widht"),
    ("model.depth: {type: int, low: 1, high: 9}", "model.depth"),
    ("stages.train.pipeline: {type: categorical, choices: [[], nope]}", "unknown pipeline 'nope'"),
])
def test_bad_search_space_names_the_key(tmp_path, space, expected):
    text = SPEC.replace("    model.filters: {type: categorical, choices: [8, 16]}", "    " + space)
    with pytest.raises(SpecError, match=expected.replace("(", r"\(")):
        check_search(parse_spec(text, tmp_path / "s.yaml"))


def test_space_values_validated_on_load(tmp_path):
    with pytest.raises(SpecError, match="log scale needs 'low' > 0"):
        parse_spec(SPEC.replace("low: 0.0005", "low: 0"), tmp_path / "s.yaml")


def test_listed_design_runs_each_point_with_its_name(tmp_path):
    text = "name: l\ndesign: listed\nrepeats: 2\npoints: {a: {model.filters: 8}, b: {training.learning_rate: 0.01}}\n"
    runs = plan_runs(parse_spec(text, tmp_path / "l.yaml"), "fp")
    assert [(r.factors["candidate"], r.replicate) for r in runs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert runs[0].config.model.filters == 8 and runs[2].config.training.learning_rate == 0.01
    assert runs[0].seeds == runs[2].seeds  # replicate r shares its seeds across candidates: paired comparison


def test_tune_with_two_workers_end_to_end(tmp_path, cli, in_process):
    """Two worker processes draw trials from one Optuna storage under Hyperband: each trial trains once, none is
    lost; the seed-robust pick is recorded in MLflow, where `predict` finds it."""
    # 5 trials of 3 epochs: Hyperband must leave at least top_k = 2 complete (4 of 2 epochs once left 1)
    (tmp_path / "tune.yaml").write_text(SPEC.replace("n_trials: 6", "n_trials: 5\n  pruner: hyperband"))
    done = cli("tune", "tune.yaml", "--workers", "2", "--no-progress", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "winner's curse" in done.stdout and "Seed-robust best" in done.stdout
    result = json.loads((tmp_path / "reports/tq/tune.json").read_text())
    searched = result["search"]["complete"] + result["search"]["pruned"]
    # a worker counts the other's running trial before starting one; only two exactly simultaneous checks at
    # n-1 let both start, so at most one trial over n
    assert 5 <= searched <= 6
    assert result["search"]["running"] == result["search"]["waiting"] == 0
    assert result["pruning"]["epochs_trained"] <= result["pruning"]["epochs_without_pruning"] == 3 * searched
    assert [c["n"] for c in result["candidates"]] == [2, 2]
    code, status, _ = in_process("status", "tq")
    pruned = result["search"]["pruned"]
    assert code == 0 and f"{result['search']['complete']} done" in status
    assert (f"{pruned} pruned" in status) == (pruned > 0) and "0 killed" in status

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    exp = client.get_experiment_by_name("tq")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("harness.role") == "study")
    assert parent.data.tags["harness.robust_best"] == result["robust_best"]
    assert sum(r.data.tags.get("harness.best_trial") == "true" for r in runs) == 1
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs if r is not parent)
    trial_runs = [r for r in runs if r.data.tags.get("harness.role") != "study"]
    assert len(trial_runs) == searched and len({r.data.tags["mlflow.runName"] for r in trial_runs}) == searched

    # the seed-robust pick is what predict takes (tests/commands/test_predict.py covers predict itself)
    chosen = chosen_config(client, "tq")
    assert chosen.config == RunConfig.model_validate_json(parent.data.tags["harness.robust_best_config"])
    assert chosen.source.startswith("seed-robust best of the search")


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
@pytest.mark.parametrize("warmup, expected", [("", 10), ("\n  warmup_epochs: 4", 4)])
def test_no_trial_is_pruned_before_the_warmup_epochs(tmp_path, pruner, warmup, expected):
    """A trial far behind five finished ones survives until the warmup epoch; the median pruner then prunes it."""
    text = (SPEC.replace("epochs: 3", "epochs: 30").replace("n_trials: 6", f"n_trials: 6\n  pruner: {pruner}{warmup}"))
    spec = parse_spec(text, tmp_path / "s.yaml")
    assert warmup_epochs(spec) == expected
    study = optuna.create_study(direction="maximize", pruner=make_pruner(spec))
    for _ in range(5):
        good = study.ask()
        for epoch in range(1, 31):
            good.report(0.9, epoch)
        study.tell(good, 0.9)
    bad = study.ask()
    first_pruned = next((epoch for epoch in range(1, 31) if bad.report(0.1, epoch) or bad.should_prune()), None)
    if pruner == "median":
        assert first_pruned == expected
    else:  # Hyperband compares a trial only with its bracket's rung; whether it prunes depends on the bracket
        assert first_pruned is None or first_pruned >= expected


def test_a_plateau_stage_counts_its_max_for_the_pruners(tmp_path):
    """A stage that may stop early is planned at its `max` (Hyperband's resource); the warmup is a third of it."""
    spec = parse_spec(SPEC.replace("epochs: 3", "epochs: {until: plateau, max: 30, patience: 5}"), tmp_path / "s.yaml")
    assert planned_epochs(spec) == 30 and warmup_epochs(spec) == 10


def test_model_args_of_a_user_model_are_searched_like_any_key(tmp_path):
    """`model.args.*` in a search space: accepted, suggested by Optuna, applied to the trial's training config
    (with its own run key) and carried into the re-evaluation study. The search's execution is the built-in
    model's (test_tune_with_two_workers_then_predict_end_to_end)."""
    from harness.execution.search import reeval_spec, suggest, trial_run

    (tmp_path / "net.py").write_text("def build(input_shape, n_classes, args, seeds):\n    raise NotImplementedError\n")
    text = ("name: ut\nrepeats: 1\nbase:\n  model: {builder: net.py:build, args: {width: 4, act: relu}}\n"
            "search:\n  space: {model.args.width: {type: categorical, choices: [2, 4]}}\n  n_trials: 2\n"
            "  top_k: 2\n  reeval_repeats: 2\n")
    spec = parse_spec(text, tmp_path / "ut.yaml")
    check_search(spec)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"model.args.width": ["2", "4"]}))
    widths = [suggest(study.ask(), "model.args.width", spec.search.space["model.args.width"]) for _ in range(2)]
    runs = [trial_run(spec, {"model.args.width": width}, "fp") for width in widths]
    assert sorted(run.config.model.args["width"] for run in runs) == [2, 4]
    assert all(run.config.model.args["act"] == "relu" for run in runs)  # the other args stay the base's
    assert len({run.run_key for run in runs}) == 2
    top = [{"label": f"w{width}", "overrides": {"model.args.width": width}} for width in widths]
    reeval = plan_runs(reeval_spec(spec, top), "fp")
    assert sorted(run.config.model.args["width"] for run in reeval) == [2, 2, 4, 4]
