"""The preprocessing grammar of a study: named OpenCV steps, their parameters, defaults and allowed ranges.

A pipeline is an ordered tuple of `Step`s with every default filled in, so two spellings of the same pipeline
resolve to one run key and share one cache entry. This module only parses and names pipelines (no OpenCV), so a
spec is validated without loading image libraries; `harness.training.preprocess` runs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import SpecError

CACHE_VERSION = 1  # bump when a step's implementation changes what it outputs


@dataclass(frozen=True)
class Step:
    """One named step with all its parameters, sorted by name: hashable and canonical."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    @property
    def label(self) -> str:
        """Short human label: the name plus the parameters that differ from their defaults."""
        defaults = {key: rule[0] for key, rule in _PARAMS[self.name].items()}
        changed = [f"{key}={value}" for key, value in self.params if defaults.get(key) != value]
        return f"{self.name}({', '.join(changed)})" if changed else self.name

    def to_raw(self) -> str | dict[str, dict[str, Any]]:
        """The YAML form: a bare name when all parameters are defaults, else {name: {param: value}}."""
        return self.name if self.label == self.name else {self.name: dict(self.params)}


# ---------------------------------------------------------------- parameter rules
# name -> param -> (default, kind, allowed) with kind "int", "float" or "choice"

_MORPHOLOGY = {"kernel": (2, "int", (1, 15)), "iterations": (1, "int", (1, 10))}
_PARAMS: dict[str, dict[str, tuple[Any, str, Any]]] = {
    "upscale": {
        "factor": (3, "int", (1, 8)),
        "interpolation": ("linear", "choice", ("linear", "nearest", "cubic", "area")),
    },
    "equalize": {},
    "clahe": {"clip_limit": (2.0, "float", (0.01, 40.0)), "tile": (8, "int", (1, 16))},
    "stretch": {"low_percentile": (0.0, "float", (0.0, 100.0)), "high_percentile": (100.0, "float", (0.0, 100.0))},
    "binarize": {
        "method": ("fixed", "choice", ("fixed", "otsu", "adaptive")),
        "threshold": (135, "int", (0, 255)),
        "block_size": (11, "int", (3, 51)),
        "c": (2.0, "float", (-255.0, 255.0)),
    },
    "erode": _MORPHOLOGY,
    "dilate": _MORPHOLOGY,
    "open": _MORPHOLOGY,
    "close": _MORPHOLOGY,
    "normalize": {},
}
STEP_NAMES: tuple[str, ...] = tuple(sorted(_PARAMS))


def _check_value(value: Any, kind: str, allowed: Any, where: str) -> Any:
    """The canonical value (ints stay int, floats become float), or a SpecError naming what is allowed."""
    if kind == "choice":
        if value not in allowed:
            raise SpecError(f"{where}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value
    low, high = allowed
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "int" and not isinstance(value, int)):
        raise SpecError(f"{where}: {value!r} is not {'an integer' if kind == 'int' else 'a number'} in {low}..{high}")
    if not low <= value <= high:
        raise SpecError(f"{where}: {value!r} is out of range; allowed: {low}..{high}")
    return int(value) if kind == "int" else float(value)


def _parse_step(item: Any, where: str) -> Step:
    if isinstance(item, Step):
        item = item.to_raw() if item.name in _PARAMS else item.name
    if isinstance(item, str):
        name, given = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        ((name, given),) = item.items()
        given = {} if given is None else given
    else:
        raise SpecError(f"{where}: each step must be a name or a one-key mapping like {{erode: {{kernel: 2}}}}")
    if name not in _PARAMS:
        raise SpecError(f"{where}: unknown step {name!r}; allowed: {', '.join(STEP_NAMES)}")
    rules = _PARAMS[name]
    if not isinstance(given, dict):
        raise SpecError(f"{where}.{name}: parameters must be a mapping; allowed keys: {', '.join(rules) or 'none'}")
    for key in given:
        if key not in rules:
            allowed = ", ".join(rules) if rules else "none (this step takes no parameters)"
            raise SpecError(f"{where}.{name}: unknown parameter {key!r}; allowed: {allowed}")
    values = {
        key: _check_value(given.get(key, default), kind, allowed, f"{where}.{name}.{key}")
        for key, (default, kind, allowed) in rules.items()
    }
    if name == "stretch" and values["low_percentile"] >= values["high_percentile"]:
        raise SpecError(f"{where}.stretch: low_percentile must be below high_percentile")
    if name == "binarize" and values["block_size"] % 2 == 0:
        raise SpecError(f"{where}.binarize.block_size: {values['block_size']} is even; allowed: odd 3..51")
    return Step(name, tuple(sorted(values.items())))


def parse_pipeline(raw: Any, where: str) -> tuple[Step, ...]:
    """Validate the spec's list of steps and fill defaults; `where` is the key path used in messages."""
    if raw is None:
        return ()
    if isinstance(raw, str | dict | Step) or not isinstance(raw, Sequence):
        raise SpecError(f"{where}: must be a list of steps; allowed steps: {', '.join(STEP_NAMES)}")
    steps = tuple(_parse_step(item, f"{where}[{index}]") for index, item in enumerate(raw))
    for index, step in enumerate(steps[:-1]):
        if step.name == "normalize":
            raise SpecError(f"{where}[{index}]: 'normalize' must be the last step")
    return steps


def pipeline_to_raw(steps: Sequence[Step]) -> list:
    """The YAML/JSON form of a parsed pipeline, for run records; parses back to the same steps."""
    return [step.to_raw() for step in steps]


def pipeline_key(steps: Sequence[Step]) -> str:
    """Stable 16-hex-char hash of the canonical pipeline (and the cache version)."""
    canonical = json.dumps([[step.name, [list(pair) for pair in step.params]] for step in steps])
    return hashlib.sha256(f"pipeline-v{CACHE_VERSION}:{canonical}".encode()).hexdigest()[:16]


def output_size(steps: Sequence[Step], input_size: int = 28) -> int:
    """Side length after the pipeline, without running it (only upscale changes the size)."""
    for step in steps:
        if step.name == "upscale":
            input_size *= step.param("factor")
    return input_size
