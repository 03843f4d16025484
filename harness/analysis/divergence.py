"""Where two replays of one training part, and the likely cause with the switch that removes it.

Input is what `harness.training.replay` records on each side: a hash per weight after every step (step 0: the
build), and at the first step k whose hashes differ, from the identical state step k started from, that step's
internals (`harness.training.probe`): each layer's output in graph order, each gradient, the update. The first of
them to differ is the kind of divergence:

- `initial weights` (k = 0): the build itself differs: an initializer that takes no seed from `seeds`, or one
  from outside them (the clock, `os.urandom`), or two backends' random generators;
- `forward`: the first layer, in graph order, whose output differs: a random layer seeded outside `seeds`
  (augmentation, dropout, noise), else a nondeterministic kernel;
- `gradient`: every output equal, a gradient differs: a nondeterministic reduction or kernel in the backward
  pass. The differing gradient nearest the output is reported: differences flow backwards from there;
- `update`: gradients equal, the updated weights differ: the optimizer's step;
- `compiled step`: the step taken apart is identical on both sides, only `fit`'s compiled step parts (XLA).

After initial weights that differ, B takes A's and the replay goes on (`from_a_weights`): where, from equal
weights, the steps themselves part (two backends: their kernels and random draws), or that they do not.

Pure numpy: the arrays, names and settings come in, the verdict goes out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# One side's array: (name, op type, value, draws random numbers)
Entry = tuple[str, str, np.ndarray, bool]
RANDOM_OPS = ("Random", "Dropout", "Noise")  # Keras layer classes that draw random numbers


def first_step(trace_a: list[list[str]], trace_b: list[list[str]]) -> int | None:
    """The first step after which the weights' hashes differ (0: the initial weights); None if none of the
    steps both sides reached does."""
    for step, (a, b) in enumerate(zip(trace_a, trace_b, strict=False)):
        if a != b:
            return step
    return None


def differing(hashes_a: list[str], hashes_b: list[str]) -> list[int]:
    """Indices of the weights whose hashes differ (all of them when the two models have different weights)."""
    if len(hashes_a) != len(hashes_b):
        return list(range(max(len(hashes_a), len(hashes_b))))
    return [i for i, (a, b) in enumerate(zip(hashes_a, hashes_b, strict=True)) if a != b]


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit: same dtype, shape and bytes (NaNs with equal bits count as equal)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a − b| over elements; inf for different shapes or a NaN on one side only."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = math.inf
    return float(diff.max())


def first_differing(a: list[Entry], b: list[Entry], last: bool = False) -> tuple[Entry, float] | None:
    """The first (or, `last`, the last) entry in order whose arrays differ, with its largest absolute difference."""
    pairs = [(ea, eb) for ea, eb in zip(a, b, strict=False) if not identical(ea[2], eb[2])]
    if not pairs and len(a) == len(b):
        return None
    if not pairs:  # one side has entries the other lacks: the models are not the same graph
        extra = (a if len(a) > len(b) else b)[min(len(a), len(b))]
        return extra, math.inf
    ea, eb = pairs[-1] if last else pairs[0]
    return ea, max_abs_diff(ea[2], eb[2])


def layer_of(path: str) -> str:
    """A weight's layer from its path: `head/kernel` → `head`, `block/conv/kernel` → `block/conv`."""
    return path.rsplit("/", 1)[0] if "/" in path else path


def locate_initial(weights: list[tuple[str, str]], hashes_a: list[str], hashes_b: list[str],
                   arrays_a: list[np.ndarray], arrays_b: list[np.ndarray]) -> dict[str, Any]:
    """Step 0: the weights that differ after the build; the first of them (in the model's order) is `where`."""
    indices = differing(hashes_a, hashes_b)
    first = indices[0]
    path, op = weights[first] if first < len(weights) else (f"weight {first}", "?")
    size = max_abs_diff(arrays_a[first], arrays_b[first]) if first < min(len(arrays_a), len(arrays_b)) else math.inf
    return {"step": 0, "kind": "initial weights", "where": layer_of(path), "op": op, "max_abs_diff": size,
            "variables": [weights[i][0] if i < len(weights) else f"weight {i}" for i in indices], "random": False}


def locate_step(step: int, probe_a: dict[str, list[Entry]], probe_b: dict[str, list[Entry]],
                hashes_a: list[str], hashes_b: list[str], weights: list[tuple[str, str]]) -> dict[str, Any]:
    """Step k ≥ 1 taken apart on both sides from the same state: forward, then gradient, then update."""
    for kind, last in (("forward", False), ("gradient", True), ("update", False)):
        found = first_differing(probe_a[kind], probe_b[kind], last=last)
        if found is not None:
            (name, op, _, random), size = found
            where = name if kind == "forward" else layer_of(name)
            out = {"step": step, "kind": kind, "where": where, "op": op, "max_abs_diff": size, "random": random}
            if kind != "forward":
                out["variable"] = name
            return out
    indices = differing(hashes_a, hashes_b)
    path, op = weights[indices[0]] if indices and indices[0] < len(weights) else ("?", "?")
    return {"step": step, "kind": "compiled step", "where": layer_of(path), "op": op, "max_abs_diff": None,
            "variable": path, "random": False}


def cause(found: dict[str, Any], side_a: dict[str, Any], side_b: dict[str, Any],
          differences: dict[str, tuple[Any, Any]] | None = None) -> str:
    """The likely cause of a located divergence and the switch that would remove it.

    `side_a`/`side_b`: each replay's backend and determinism as read back (backend, op_determinism, xla, tf32,
    intra_op_threads, inter_op_threads) and its `device` (cpu or gpu). `differences`: the config keys and seeds
    A and B differ in (key → (A's, B's)), which explain the parting before any nondeterminism does."""
    kind, where, op = found["kind"], found["where"], found["op"]
    if side_a.get("backend") != side_b.get("backend"):
        what = "initial weights" if kind == "initial weights" else f"{op} ({kind})"
        return (f"the runs use different backends ({side_a.get('backend')} vs {side_b.get('backend')}): their random "
                f"generators and kernels differ, so their {what} part; no switch makes two backends agree bit for "
                "bit (train both on one backend)")
    for key, switch in (("op_determinism", "determinism.op_determinism"), ("xla", "determinism.xla"),
                        ("tf32", "determinism.tf32"), ("intra_op_threads", "determinism.intra_op_threads"),
                        ("inter_op_threads", "determinism.inter_op_threads")):
        if side_a.get(key) != side_b.get(key):
            return (f"the runs differ in {switch} ({side_a.get(key)} vs {side_b.get(key)}): set it the same in both "
                    "(op determinism on, XLA and TF32 off, one thread for bit-identical runs)")
    configured = _configured(found, differences or {})
    if configured:
        return configured
    if kind == "initial weights":
        return (f"the initializer of '{where}' takes no seed from `seeds`, or one from outside them (os.urandom, the "
                "clock): pass it seeds.initializer() (or seeds.init()) in the builder")
    if found.get("random") or any(op.startswith(p) or op.endswith(p) for p in RANDOM_OPS):
        return (f"layer '{where}' ({op}) draws random numbers from a seed outside `seeds`: give it seeds.augment() "
                "(augmentation) or seeds.dropout() (dropout, noise) in the builder")
    return _kernel_cause(found, side_a)


def _configured(found: dict[str, Any], differences: dict[str, tuple[Any, Any]]) -> str | None:
    """A seed or config key the runs differ in that accounts for the parting: not nondeterminism at all."""
    kind = found["kind"]
    seeds = {"initial weights": ("seeds.init",), "forward": ("seeds.augment", "seeds.dropout")}.get(kind, ())
    for key in seeds:
        if key in differences and (kind == "initial weights" or found.get("random")):
            a, b = differences[key]
            return (f"A and B differ in {key} ({a} vs {b}): the {kind} of '{found['where']}' is what that seed "
                    "decides, not nondeterminism")
    others = [key for key in differences if not key.startswith("seeds.")]
    if others:
        return (f"A and B differ in {', '.join(others)}: the runs part where that difference first acts, not by "
                "nondeterminism")
    return None


def _kernel_cause(found: dict[str, Any], side: dict[str, Any]) -> str:
    kind, op = found["kind"], found["op"]
    part = {"forward": f"{op}'s forward kernel", "gradient": f"the gradient of {op} (a reduction in the backward pass)",
            "update": "the optimizer's update", "compiled step": "the compiled training step"}[kind]
    if side.get("xla"):
        return f"{part} differs under XLA (autotuned per process): set determinism.xla: false"
    if side.get("tf32"):
        return f"{part} differs with TF32 matmuls on: set determinism.tf32: false"
    if not side.get("op_determinism"):
        return f"{part} is not deterministic: set determinism.op_determinism: true"
    device = side.get("device", "this device")
    threads = "" if side.get("intra_op_threads") == 1 else "; one thread (determinism.intra_op_threads: 1) may"
    return (f"{part} has no deterministic kernel on this device ({device}) even with op determinism on"
            f"{threads + ' remove it' if threads else ''}")


def summary(found: dict[str, Any] | None, steps: int) -> str:
    """One sentence for explain's verdict."""
    if found is None:
        plural = "" if steps == 1 else "s"
        return f"Replayed in two fresh processes, the runs are identical through {steps} step{plural}."
    size = found.get("max_abs_diff")
    by = "" if size is None else f", largest absolute difference {size:.3g}"
    at = "the initial weights (step 0)" if found["step"] == 0 else f"step {found['step']}"
    said = (f"The runs part at {at}: {found['kind']}, in '{found['where']}' ({found['op']}){by}. "
            f"Likely cause: {found['cause']}.")
    then = found.get("from_a_weights")
    if then is None:
        return said
    if "identical_through" in then:
        return (f"{said} Both started from A's initial weights, they are identical through "
                f"{then['identical_through']} steps: the initial weights are the whole difference there.")
    size = then.get("max_abs_diff")
    by = "" if size is None else f", largest absolute difference {size:.3g}"
    return (f"{said} Both started from A's initial weights, they part at step {then['step']}: {then['kind']}, in "
            f"'{then['where']}' ({then['op']}){by}; likely cause: {then['cause']}.")
