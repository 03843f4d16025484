"""explain.json/md carry the trace: `divergence` with its six keys, the verdict sentence, the "Where they part"
table; pure, from a trace result as harness.execution.trace returns it."""

import json

from harness.report import explain as write_up
from harness.study.compare import RunRecord

SIDE = {"backend": "tensorflow", "device": "cpu", "op_determinism": True}
FOUND = {"step": 1, "kind": "forward", "where": "jitter", "op": "RandomTranslation", "max_abs_diff": 0.5,
         "random": True, "cause": "layer 'jitter' draws random numbers from a seed outside `seeds`"}


def records(same_weights: bool = False):
    return (RunRecord("A", "a.json", {"seeds": {}}, accuracy=0.5, weights_hash="aa"),
            RunRecord("B", "b.json", {"seeds": {}}, accuracy=0.6, weights_hash="aa" if same_weights else "bb"))


def traced(found):
    return {"steps": 1 if found else 3, "seconds": 12.5, "sides": {"A": SIDE, "B": SIDE}, "divergence": found,
            "probe_reproduces": {"A": True, "B": True}, "fingerprints": {}, "timing": {}}


def test_divergence_in_json_verdict_and_markdown(tmp_path):
    a, b = records()
    ex = write_up.assemble(a, b, [], None, trace=traced(FOUND))
    assert set(ex["divergence"]) == {"step", "kind", "where", "op", "max_abs_diff", "cause"}
    assert any(line.startswith("The runs part at step 1: forward, in 'jitter'") for line in ex["verdict"])
    write_up.write(ex, tmp_path)
    md = (tmp_path / "explain.md").read_text()
    assert "## Where they part" in md and "| 1 | forward | jitter | RandomTranslation | 0.5 |" in md
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert saved["divergence"]["where"] == "jitter" and saved["trace"]["steps"] == 1


def test_identical_replays_say_so_and_no_trace_means_null():
    a, b = records(same_weights=True)
    ex = write_up.assemble(a, b, [], None, identical=True, trace=traced(None))
    assert ex["divergence"] is None and "identical through 3 steps" in ex["verdict"][-1]
    plain = write_up.assemble(*records(), [], None)
    assert plain["divergence"] is None and plain["trace"] is None


def test_identical_replays_of_runs_whose_weights_differ_name_the_environment():
    from harness.commands.explain import _divergence_note
    from harness.study.compare import Difference

    diffs = [Difference("env.cpu_model", "environment", "Xeon", "EPYC", varied=False)]
    note = _divergence_note(diffs, traced(None), weights_differ=True)
    assert "identical through 3 steps" in note and "env.cpu_model (Xeon vs EPYC)" in note
    assert _divergence_note(diffs, traced(FOUND), weights_differ=True) is None  # located: the verdict says where
    assert _divergence_note(diffs, traced(None), weights_differ=False) is None
