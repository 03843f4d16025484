"""Spec validation: every refusal is one line naming the file, the key path and what is allowed."""

from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.study.spec import load_spec, parse_spec

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def refusal(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, Path("bad.yaml"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("bad.yaml")
    return message


def test_unknown_key_names_path_and_allowed_keys():
    message = refusal("name: x\nbase: {model: {filtrs: 3}}")
    assert "base.model.filtrs: unknown key" in message
    assert "filters" in message and "dropout" in message


def test_unknown_top_level_key_lists_allowed_keys_without_internals():
    message = refusal("name: x\nfoo: 1")
    assert "foo: unknown key" in message and "factors" in message
    assert "source" not in message


def test_bad_value_names_allowed_values():
    message = refusal("name: x\nbase: {training: {optimizer: adamw}}")
    assert "base.training.optimizer" in message and "'adam'" in message


def test_malformed_yaml_names_line():
    assert "line 2" in refusal("name: x\n  bad: [")


def test_non_mapping_and_missing_name():
    refusal("- a\n- b")
    assert "name: required key is missing" in refusal("repeats: 2")


def test_nothing_is_evaluated_as_code():
    assert "invalid YAML" in refusal("name: !!python/object/apply:os.system ['echo hi']")


def test_csv_source_needs_path_and_resolves_relative_to_spec(tmp_path):
    assert "needs 'path'" in refusal("name: x\ndata: {source: csv}")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("name: x\ndata: {source: csv, path: d/train.csv}")
    assert load_spec(spec_file).data.path == tmp_path / "d" / "train.csv"


def test_missing_spec_file():
    with pytest.raises(SpecError, match="nope.yaml: file not found"):
        load_spec("nope.yaml")


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    spec = load_spec(path)
    assert spec.source_text and spec.name


PLATEAU = "{until: plateau, max: 30, patience: 5}"


def stage_spec(epochs: str, extra: str = "") -> str:
    return f"name: x\nbase: {{{extra}stages: {{a: {{epochs: {epochs}}}}}, stage_order: [a]}}"


def test_epochs_may_be_a_plateau_criterion_with_its_defaults_filled_in():
    stage = parse_spec(stage_spec(PLATEAU), Path("s.yaml")).base.stages["a"]
    assert stage.epochs.model_dump() == {"until": "plateau", "max": 30, "patience": 5, "monitor": "loss",
                                         "min_delta": 0.0}
    assert parse_spec(stage_spec("7"), Path("s.yaml")).base.stages["a"].epochs == 7


@pytest.mark.parametrize("epochs, expected", [
    ("{until: plateau, max: 30, patience: 5, patiense: 3}",
     "base.stages.a.epochs.patiense: unknown key; allowed: max, min_delta, monitor, patience, until"),
    ("{until: plateau, max: 10, patience: 10}", "base.stages.a.epochs: patience (10) must be below max (10)"),
    ("{max: 30, patience: 5}", "base.stages.a.epochs.until: required key is missing"),
    ("{until: converged, max: 30, patience: 5}", "base.stages.a.epochs.until: Input should be 'plateau'"),
    ("{until: plateau, max: 5000, patience: 5}", "base.stages.a.epochs.max: Input should be less than or equal"),
    # the scored fold is not a criterion: stopping where it looks best would bias the score upward
    ("{until: plateau, max: 30, patience: 5, monitor: val_loss}", "base.stages.a.epochs.monitor: Input should be"),
    ("{until: plateau, max: 30, patience: 5, min_delta: -0.1}", "base.stages.a.epochs.min_delta"),
    ("0", "base.stages.a.epochs: Input should be greater than or equal to 1"),
    ("plateau", "base.stages.a.epochs: a number of epochs, or a criterion like {until: plateau, max: 300"),
])
def test_a_bad_plateau_criterion_names_its_key(epochs, expected):
    assert expected in refusal(stage_spec(epochs))


def test_seed_batches_refuse_a_stage_that_may_stop_on_its_own():
    """A jax seed batch trains its seeds in lock step; each seed's plateau comes at its own epoch."""
    message = refusal(stage_spec(PLATEAU, "backend: jax, execution: {batch_seeds: 4}, "))
    assert "stops on a plateau (stages.a.epochs): 1" in message
    parse_spec(stage_spec("3", "backend: jax, execution: {batch_seeds: 4}, "), Path("s.yaml"))


def test_seed_batches_refuse_test_time_shifts_and_shifts_have_a_range():
    """A seed batch scores its lanes in one compiled step on unshifted images; shifts past 3 px are a typo."""
    batched = "backend: jax, execution: {batch_seeds: 4}, evaluation: {test_shifts: 1}, "
    assert "allowed with evaluation.test_shifts > 0: 1" in refusal(stage_spec("3", batched))
    assert "evaluation.test_shifts: Input should be less than or equal to 3" in refusal(
        stage_spec("3", "evaluation: {test_shifts: 4}, "))
    parse_spec(stage_spec("3", "evaluation: {test_shifts: 2}, "), Path("s.yaml"))
