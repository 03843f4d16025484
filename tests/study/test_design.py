"""Design expansion: run counts, stable keys, seeds by source, factor validation."""

from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.study.design import effective_seeds, level_label, plan_runs, process_key, short_factor_names
from harness.study.spec import parse_spec


def spec(text: str):
    """A spec with one replicate per design point unless the text sets `repeats` (the default is 3)."""
    return parse_spec("name: t\n" + ("" if "repeats:" in text else "repeats: 1\n") + text, Path("t.yaml"))


def test_factorial_times_repeats():
    runs = plan_runs(
        spec("repeats: 3\nfactors: {model.dropout: [0.1, 0.2], augmentation.enabled: [true, false]}"), "fp"
    )
    assert len(runs) == 12
    assert len({r.run_key for r in runs}) == 12
    assert {r.factors["augmentation.enabled"] for r in runs} == {"on", "off"}


def test_one_at_a_time_moves_one_factor_from_base():
    text = (
        "design: one_at_a_time\nbase: {model: {dropout: 0.25, filters: 32}}\n"
        "factors: {model.dropout: [0.25, 0.5], model.filters: [8, 16, 32]}"
    )
    runs = plan_runs(spec(text), "fp")
    # base (dropout 0.25, filters 32) + dropout 0.5 + filters 8 + filters 16
    assert len(runs) == 4
    assert sum(r.factors["model.dropout"] == "0.25" and r.factors["model.filters"] == "32" for r in runs) == 1
    # the base config is marked, so a lone factor's moves can be compared with it
    assert [r.factors for r in runs if r.base_point] == [{"model.dropout": "0.25", "model.filters": "32"}]
    assert not any(r.base_point for r in plan_runs(spec(text.replace("one_at_a_time", "factorial")), "fp"))


def test_keys_are_stable_and_depend_on_data():
    text = "repeats: 2\nfactors: {seeds.order: [1, 2]}"
    first, again = plan_runs(spec(text), "fp"), plan_runs(spec(text), "fp")
    assert [r.run_key for r in first] == [r.run_key for r in again]
    assert {r.run_key for r in plan_runs(spec(text), "other")}.isdisjoint({r.run_key for r in first})


def test_fixed_seeds_make_identical_configs_across_replicates():
    runs = plan_runs(spec("repeats: 3\nbase: {seeds: {fresh: []}}"), "fp")
    assert len({r.config_key for r in runs}) == 1
    assert len({r.run_key for r in runs}) == 3


def test_fresh_seeds_change_only_their_source():
    runs = plan_runs(spec("repeats: 2\nbase: {seeds: {fresh: [order]}}"), "fp")
    a, b = runs[0].seeds, runs[1].seeds
    assert a["order"] != b["order"]
    assert {k: v for k, v in a.items() if k != "order"} == {k: v for k, v in b.items() if k != "order"}


def test_effective_seeds_are_deterministic():
    config = spec("").base
    assert effective_seeds(config, 4) == effective_seeds(config, 4) != effective_seeds(config, 5)


def test_unknown_factor_path_is_refused():
    with pytest.raises(SpecError, match=r"factors\.model\.filtrs: unknown key; allowed: .*filters"):
        plan_runs(spec("factors: {model.filtrs: [1, 2]}"), "fp")


def test_bad_factor_value_is_refused():
    with pytest.raises(SpecError, match=r"factors\.training\.optimizer"):
        plan_runs(spec("factors: {training.optimizer: [adam, lion]}"), "fp")


def test_stage_order_and_pipeline_references_resolve():
    text = """
base:
  pipelines: {big: [{upscale: {factor: 3}}, stretch]}
  stages:
    a: {pipeline: big, epochs: 1}
    b: {pipeline: [{upscale: {factor: 3}}, {binarize: {method: otsu}}], epochs: 2}
factors: {stage_order: [[a, b], [b, a], [b]]}
"""
    runs = plan_runs(spec(text), "fp")
    assert [r.factors["stage_order"] for r in runs] == ["a→b", "b→a", "b"]
    assert [s.name for s in runs[1].stages] == ["b", "a"]
    assert runs[0].stages[0].steps[0].name == "upscale"


def test_unknown_stage_or_pipeline_is_refused():
    with pytest.raises(SpecError, match="unknown stage 'c'"):
        plan_runs(spec("base: {stage_order: [c]}"), "fp")
    with pytest.raises(SpecError, match="unknown pipeline 'nope'"):
        plan_runs(spec("base: {stages: {train: {pipeline: nope}}}"), "fp")


def test_stages_must_share_one_image_size():
    text = "base:\n  stages: {a: {pipeline: [{upscale: {factor: 3}}]}, b: {pipeline: []}}\n  stage_order: [a, b]"
    with pytest.raises(SpecError, match="one image size"):
        plan_runs(spec(text), "fp")


def test_labels_and_process_keys():
    assert level_label(True) == "on" and level_label(["a", "b"]) == "a→b" and level_label([]) == "none"
    runs = plan_runs(spec("factors: {determinism.op_determinism: [true, false], model.dropout: [0.1, 0.2]}"), "fp")
    assert len({process_key(r) for r in runs}) == 2


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([], []),
        (["augmentation.enabled"], ["enabled"]),
        (["stages.a.epochs", "stages.b.epochs", "seeds.init"], ["a.epochs", "b.epochs", "init"]),
        (["model.dropout", "training.dropout"], ["model.dropout", "training.dropout"]),
        (["a.b", "b"], ["a.b", "b"]),
        (["x.a.b", "a.b", "c.b"], ["x.a.b", "a.b", "c.b"]),
        (["stage_order", "seeds.fresh"], ["stage_order", "fresh"]),
    ],
)
def test_short_factor_names_are_short_and_never_ambiguous(keys, expected):
    short = short_factor_names(keys)
    assert [short[k] for k in keys] == expected
    assert len(set(short.values())) == len(keys)
    assert all(key == name or key.endswith("." + name) for key, name in short.items())


def test_run_names_tell_same_named_factors_apart():
    text = """
base:
  stages: {a: {pipeline: [], epochs: 1}, b: {pipeline: [], epochs: 1}}
  stage_order: [a, b]
factors: {stages.a.epochs: [1, 2], stages.b.epochs: [1, 3]}
"""
    runs = plan_runs(spec(text), "fp")
    assert [r.name for r in runs] == [
        "a.epochs=1 · b.epochs=1 · rep=0",
        "a.epochs=1 · b.epochs=3 · rep=0",
        "a.epochs=2 · b.epochs=1 · rep=0",
        "a.epochs=2 · b.epochs=3 · rep=0",
    ]
    assert len({r.name for r in runs}) == len(runs)


def test_a_minimal_spec_plans_enough_runs_per_level_to_test():
    from harness.analysis.levels import MIN_N

    runs = plan_runs(parse_spec("name: t\nfactors: {model.dropout: [0.1, 0.2]}", Path("t.yaml")), "fp")
    per_level = {level: sum(r.factors["model.dropout"] == level for r in runs) for level in ("0.1", "0.2")}
    assert min(per_level.values()) >= MIN_N


def test_the_kernel_environment_is_part_of_the_run_key_not_the_config_key():
    """A changed library never reuses a run: same config under another keras is another run key, the same config."""
    from harness.env import kernel_environment

    study = spec("name: s\nrepeats: 2\n")
    here = {"tensorflow": kernel_environment("tensorflow")}
    upgraded = {"tensorflow": {**here["tensorflow"], "keras": "9.9.9"}}
    now, later = plan_runs(study, "fp", 28, here), plan_runs(study, "fp", 28, upgraded)
    assert {r.run_key for r in now}.isdisjoint(r.run_key for r in later)
    assert [r.config_key for r in now] == [r.config_key for r in later]
    assert [r.run_key for r in now] == [r.run_key for r in plan_runs(study, "fp", 28, here)]
    assert set(here["tensorflow"]) >= {"tensorflow", "keras", "numpy", "python", "cpu_count", "cpu_model"}


def test_a_plateau_criterion_is_part_of_the_run_s_identity():
    """The criterion enters the resolved config, so each setting of it is its own configuration; a fixed count
    keeps the resolved form (and keys) it had before criteria existed."""
    runs = plan_runs(spec("factors: {stages.train.epochs: [30, {until: plateau, max: 30, patience: 5}, "
                          "{until: plateau, max: 30, patience: 6}]}"), "fp")
    assert len({run.config_key for run in runs}) == 3
    fixed, plateau = runs[0].resolved()["stages"][0], runs[1].resolved()["stages"][0]
    assert fixed == {"name": "train", "epochs": 30, "pipeline": []}
    assert plateau["epochs"] == {"until": "plateau", "max": 30, "patience": 5, "monitor": "loss", "min_delta": 0.0}
    assert [run.stages[0].max_epochs for run in runs] == [30, 30, 30]
    assert runs[1].factors["stages.train.epochs"] == "max=30,patience=5,until=plateau"  # as written
