"""An automatic trace that cannot run leaves the rest of the explanation standing and says why; an asked-for
one (`--trace`) is the answer, so its failure is one line, exit 2. In-process, no backend: the trace is stubbed."""

import json

import pytest

from harness.cli import main
from harness.commands import explain
from harness.errors import HarnessError


@pytest.fixture
def same_config_other_weights(tmp_path, monkeypatch):
    for name, weights in (("a", "aa"), ("b", "bb")):
        (tmp_path / f"{name}.json").write_text(json.dumps({"resolved": {"seeds": {"init": 0}}, "weights_hash": weights,
                                                           "accuracy": 0.5}))

    def cannot(*args, **kwargs):
        raise HarnessError("the replay of A: SpecError: model.builder x.py:build: cannot import")

    monkeypatch.setattr(explain, "_trace", cannot)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_automatic_trace_failure_is_a_note(same_config_other_weights, capsys):
    assert main(["explain", "a.json", "b.json", "--no-train", "--out", "ex"]) == 0
    ex = json.loads((same_config_other_weights / "ex" / "explain.json").read_text())
    assert ex["divergence"] is None and ex["trace"] is None
    assert "not replayed to find where they part: the replay of A: SpecError" in ex["divergence_note"]


def test_asked_for_trace_failure_is_one_line_exit_2(same_config_other_weights, capsys):
    assert main(["explain", "a.json", "b.json", "--no-train", "--trace", "--out", "ex"]) == 2
    err = capsys.readouterr().err
    assert "the replay of A: SpecError" in err and len(err.strip().splitlines()) == 1
