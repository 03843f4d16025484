"""User models in the plan: builder paths, `model.args` as factors, and the builder's source hash in the run key."""

from __future__ import annotations

import pytest

from harness.errors import SpecError
from harness.study.design import plan_runs
from harness.study.spec import parse_spec

BUILDER = "def build(input_shape, n_classes, args, seeds):\n    raise NotImplementedError\n"


def spec_text(extra: str = "") -> str:
    return f"name: u\nrepeats: 1\nbase:\n  model: {{builder: models/net.py:build, args: {{width: 8}}}}\n{extra}"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models/net.py").write_text(BUILDER)
    return tmp_path


def test_builder_file_resolves_against_the_spec_and_its_hash_is_logged(folder):
    spec = parse_spec(spec_text(), folder / "s.yaml")
    assert spec.base.model.builder == f"{(folder / 'models/net.py').resolve()}:build"
    (run,) = plan_runs(spec, "fp")
    params = run.params()
    assert params["model.builder"] == "net.py:build" and params["model.args.width"] == 8
    assert len(params["model.builder_sha256"]) == 16
    assert "model.filters" not in params and not any(key.startswith("augmentation.") for key in params)


def test_editing_the_builder_file_gives_new_run_keys(folder):
    spec = parse_spec(spec_text(), folder / "s.yaml")
    before = [run.run_key for run in plan_runs(spec, "fp")]
    assert [run.run_key for run in plan_runs(spec, "fp")] == before
    (folder / "models/net.py").write_text(BUILDER + "# a comment is an edit too\n")
    after = [run.run_key for run in plan_runs(spec, "fp")]
    assert after != before and len(after) == len(before)


def test_model_args_are_factors_with_their_own_keys(folder):
    spec = parse_spec(spec_text("factors:\n  model.args.width: [8, 16]\n  model.args.act: [relu, gelu]\n"),
                      folder / "s.yaml")
    runs = plan_runs(spec, "fp")
    assert len({run.run_key for run in runs}) == 4
    assert [run.config.model.args for run in runs][:2] == [{"width": 8, "act": "relu"}, {"width": 8, "act": "gelu"}]
    assert runs[0].factors == {"model.args.width": "8", "model.args.act": "relu"}


def test_built_in_settings_cannot_vary_a_user_model(folder):
    spec = parse_spec(spec_text("factors:\n  model.filters: [8, 16]\n"), folder / "s.yaml")
    with pytest.raises(SpecError, match="resolve to the same training"):
        plan_runs(spec, "fp")


def test_built_in_cnn_run_keys_do_not_mention_builders(tmp_path):
    (run,) = plan_runs(parse_spec("name: b\nrepeats: 1\n", tmp_path / "b.yaml"), "fp")
    model = run.resolved()["model"]
    assert "builder" not in model and "args" not in model and "augmentation" in run.resolved()


@pytest.mark.parametrize(
    "model, expected",
    [
        ("{builder: models/missing.py:build}", "missing.py: file not found"),
        ("{builder: no_such_package_xyz.models:build}", "cannot find module 'no_such_package_xyz.models'"),
        ("{builder: 'models/net.py'}", "model.builder"),
        ("{args: {width: 8}}", "'args' are passed to a 'builder'"),
    ],
)
def test_bad_builder_references(folder, model, expected):
    with pytest.raises(SpecError, match="^[^\n]*$") as caught:
        plan_runs(parse_spec(f"name: u\nbase:\n  model: {model}\n", folder / "s.yaml"), "fp")
    assert expected in str(caught.value)
