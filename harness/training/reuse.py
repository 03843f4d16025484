"""Compiled models kept between the runs of one training process.

A run whose architecture this process has already compiled gets that model back instead of a new compile and a
new trace of its train, test and predict steps (about a second per run, more than a short run's epochs). The
run still starts exactly where a fresh build starts: it builds its own model as always (seeded initializers,
dropout and augmentation seed states), every variable of the kept model is overwritten with that build's
values, and the optimizer's variables go back to their values before its first step. When the two models'
variables do not line up one to one (path, shape, dtype), the run trains its fresh build and says why.
tests/training/test_determinism.py checks that reused and fresh models end with the same weights, bit for bit.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_KEPT = 2  # architectures kept per process: a study alternating two levels of a model factor reuses both
REUSED = "reused"
BUILT = "built"


@dataclass
class Kept:
    model: Any
    variables: list[Any]  # the model's variables when it was compiled, in order
    optimizer_start: list[np.ndarray]  # the optimizer's variables before its first step


_KEPT: OrderedDict[str, Kept] = OrderedDict()


def architecture_key(**parts: Any) -> str:
    """What a compiled model depends on besides its variables' values (layers, shapes, optimizer, loss, steps)."""
    return json.dumps(parts, sort_keys=True, default=str)


def compiled_model(fresh: Any, key: str, compile_model: Callable[[Any], None], keep: bool = True) -> tuple[Any, str]:
    """The model a run trains, and how it got it: 'reused', 'built', or 'built: <why the kept one was not>'.

    `fresh` is the run's own new build; `keep=False` (a model the caller keeps, as `predict` does) neither
    reuses nor is kept, since a later run would overwrite its weights."""
    kept = _KEPT.get(key) if keep else None
    mismatch = _mismatch(kept.variables, fresh.variables) if kept is not None else None
    if kept is not None and mismatch is None:
        for target, source in zip(kept.variables, fresh.variables, strict=True):
            target.assign(source)
        for variable, start in zip(kept.model.optimizer.variables, kept.optimizer_start, strict=True):
            variable.assign(start)
        _KEPT.move_to_end(key)
        return kept.model, REUSED
    _KEPT.pop(key, None)
    compile_model(fresh)
    if keep:
        fresh.optimizer.build(fresh.trainable_variables)
        start = [np.array(variable) for variable in fresh.optimizer.variables]
        _KEPT[key] = Kept(fresh, list(fresh.variables), start)
        while len(_KEPT) > MAX_KEPT:
            _KEPT.popitem(last=False)
    return fresh, BUILT if mismatch is None else f"{BUILT}: {mismatch}"


def _mismatch(kept: list[Any], fresh: list[Any]) -> str | None:
    """Why the fresh build's variables cannot be copied into the kept model's, or None when they can."""
    if len(kept) != len(fresh):
        return f"the kept model has {len(kept)} variables, this build {len(fresh)}"
    for index, (old, new) in enumerate(zip(kept, fresh, strict=True)):
        if (old.path, tuple(old.shape), old.dtype) != (new.path, tuple(new.shape), new.dtype):
            return (f"variable {index} is {new.path} {tuple(new.shape)} {new.dtype} here, "
                    f"{old.path} {tuple(old.shape)} {old.dtype} in the kept model")
    return None

