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
