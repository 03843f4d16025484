"""The divergence comparison on plain arrays: which step, which entry, which kind, which cause."""

import math

import numpy as np
import pytest

from harness.analysis import divergence as dv

CPU = {"backend": "tensorflow", "op_determinism": True, "xla": False, "tf32": False, "intra_op_threads": 1,
       "inter_op_threads": 1, "device": "cpu"}


def entries(*values, names=("a", "b", "c"), random=()):
    pairs = zip(names, values, strict=False)  # fewer values than names: the first few
    return [(name, f"Op{name}", np.asarray(v, dtype=np.float32), name in random) for name, v in pairs]


def test_first_step_and_differing_weights():
    same = [["h0", "h1"], ["h2", "h3"]]
    assert dv.first_step(same, same) is None
    assert dv.first_step([["x", "h1"], *same[1:]], same) == 0
    assert dv.first_step([*same, ["h4", "h5"]], [*same, ["h4", "h6"]]) == 2
    assert dv.first_step(same, same[:1]) is None  # only the steps both sides reached are compared
    assert dv.differing(["a", "b", "c"], ["a", "x", "y"]) == [1, 2]
    assert dv.differing(["a"], ["a", "b"]) == [0, 1]


def test_max_abs_diff_and_bitwise_identity():
    assert dv.max_abs_diff([1.0, 2.0], [1.5, 1.0]) == 1.0
    assert dv.max_abs_diff([np.nan, 1.0], [np.nan, 1.0]) == 0.0
    assert dv.max_abs_diff([np.nan, 1.0], [0.0, 1.0]) == math.inf
    assert dv.max_abs_diff([1.0], [1.0, 2.0]) == math.inf
    assert dv.identical(np.float32([0.0]), np.float32([0.0]))
    assert not dv.identical(np.float32([0.0]), np.float32([-0.0]))  # equal values, different bits
    assert not dv.identical(np.float32([1.0]), np.float64([1.0]))


def test_initial_weights_name_every_differing_variable_and_the_first_layer():
    weights = [("conv/kernel", "Conv2D"), ("conv/bias", "Conv2D"), ("head/kernel", "Dense")]
    a = [np.zeros(2), np.zeros(1), np.ones(3)]
    b = [np.zeros(2), np.zeros(1), np.float64([1.0, 1.25, 1.0])]
    found = dv.locate_initial(weights, ["k", "b", "h"], ["k", "b", "H"], a, b)
    assert (found["step"], found["kind"], found["where"], found["op"]) == (0, "initial weights", "head", "Dense")
    assert found["variables"] == ["head/kernel"] and found["max_abs_diff"] == 0.25


def probe(forward, gradient, update):
    return {"forward": entries(*forward, random=("a",)), "gradient": entries(*gradient, names=("x/k", "y/k")),
            "update": entries(*update, names=("x/k", "y/k"))}


@pytest.mark.parametrize("b, expected", [
    (probe([[1], [9], [9]], [[1], [2]], [[1], [2]]), ("forward", "b", "Opb", 7.0)),  # the first layer in order
    (probe([[1], [2], [3]], [[5], [6]], [[1], [2]]), ("gradient", "y", "Opy/k", 4.0)),  # nearest the output
    (probe([[1], [2], [3]], [[1], [2]], [[1], [2.5]]), ("update", "y", "Opy/k", 0.5)),
    (probe([[1], [2], [3]], [[1], [2]], [[1], [2]]), ("compiled step", "w", "Dense", None)),
])
def test_step_kind_is_the_first_part_that_differs(b, expected):
    a = probe([[1], [2], [3]], [[1], [2]], [[1], [2]])
    found = dv.locate_step(4, a, b, ["h", "x"], ["h", "y"], [("v/k", "Conv2D"), ("w/k", "Dense")])
    assert found["step"] == 4
    assert (found["kind"], found["where"], found["op"], found["max_abs_diff"]) == expected


@pytest.mark.parametrize("found, b, words", [
    ({"kind": "initial weights", "where": "head", "op": "Dense"}, {}, "seeds.initializer()"),
    ({"kind": "forward", "where": "jitter", "op": "RandomTranslation"}, {}, "seeds.augment()"),
    ({"kind": "forward", "where": "drop", "op": "Dense", "random": True}, {}, "seeds.dropout()"),
    ({"kind": "gradient", "where": "conv", "op": "Conv2D"}, {}, "no deterministic kernel on this device (cpu)"),
    ({"kind": "gradient", "where": "conv", "op": "Conv2D"}, {"backend": "jax"}, "different backends"),
    ({"kind": "forward", "where": "conv", "op": "Conv2D"}, {"op_determinism": False},
     "determinism.op_determinism (True vs False)"),
    ({"kind": "forward", "where": "conv", "op": "Conv2D"}, {"intra_op_threads": 2}, "determinism.intra_op_threads"),
])
def test_cause_names_the_switch(found, b, words):
    assert words in dv.cause(found, CPU, {**CPU, **b})


def test_kernel_causes_follow_the_settings_both_runs_share():
    conv = {"kind": "gradient", "where": "conv", "op": "Conv2D"}
    assert "set determinism.op_determinism: true" in dv.cause(conv, *[{**CPU, "op_determinism": False}] * 2)
    assert "determinism.xla: false" in dv.cause(conv, *[{**CPU, "xla": True}] * 2)
    assert "determinism.tf32: false" in dv.cause(conv, *[{**CPU, "tf32": True, "device": "gpu"}] * 2)
    two = dv.cause(conv, *[{**CPU, "intra_op_threads": 0, "device": "gpu"}] * 2)
    assert "on this device (gpu)" in two and "intra_op_threads: 1" in two


def test_summary_sentences():
    assert dv.summary(None, 5) == "Replayed in two fresh processes, the runs are identical through 5 steps."
    found = {"step": 1, "kind": "forward", "where": "jitter", "op": "RandomTranslation", "max_abs_diff": 0.5,
             "cause": "x"}
    assert dv.summary(found, 3).startswith("The runs part at step 1: forward, in 'jitter' (RandomTranslation), "
                                           "largest absolute difference 0.5.")


def test_a_seed_or_config_difference_is_named_before_any_nondeterminism():
    dropout = {"kind": "forward", "where": "dropout", "op": "Dropout", "random": True}
    said = dv.cause(dropout, CPU, CPU, {"seeds.dropout": (0, 7)})
    assert said.startswith("A and B differ in seeds.dropout (0 vs 7)") and "not nondeterminism" in said
    init = {"kind": "initial weights", "where": "head", "op": "Dense"}
    assert "seeds.init (1 vs 2)" in dv.cause(init, CPU, CPU, {"seeds.init": (1, 2), "seeds.order": (0, 3)})
    update = {"kind": "update", "where": "head", "op": "Dense"}
    assert "differ in training.learning_rate" in dv.cause(update, CPU, CPU, {"training.learning_rate": (0.1, 0.2)})
    assert "seeds.initializer()" in dv.cause(init, CPU, CPU, {"seeds.order": (0, 3)})  # order: not this part


def test_summary_goes_on_from_a_weights():
    initial = {"step": 0, "kind": "initial weights", "where": "conv2d", "op": "Conv2D", "max_abs_diff": 1.5,
               "cause": "two backends"}
    same = dv.summary({**initial, "from_a_weights": {"identical_through": 3}}, 3)
    assert same.endswith("identical through 3 steps: the initial weights are the whole difference there.")
    then = {"step": 1, "kind": "forward", "where": "jitter", "op": "RandomTranslation", "max_abs_diff": 1.0,
            "cause": "random draws"}
    parted = dv.summary({**initial, "from_a_weights": then}, 3)
    assert "Both started from A's initial weights, they part at step 1: forward, in 'jitter'" in parted
