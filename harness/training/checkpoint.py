"""Mid-training checkpoints: a training cut short (a killed worker, a Ctrl-C, a session's end) resumes at its last
saved epoch and ends with the weights it would have had uninterrupted, bit for bit.

A run's next epoch depends, besides its config, on:
- the model's variables: weights, batch-norm statistics, and the seed states of its dropout and augmentation
  layers (Keras 3 keeps those as variables: `model.variables` holds them);
- the optimizer's variables: its moments and its step counter, which drives the learning-rate schedule;
- the history so far: the plateau criterion replays it (`ResumedEarlyStopping`);
- where it is: which stage, how many of its epochs are done, whether it has ended. The data order needs
  nothing more: it is a function of (order seed, epoch) (training.batches).

A checkpoint holds exactly those, in one `.npz` named by the run key (which names the resolved config and the data
fingerprint), written atomically, so a kill mid-write leaves the previous one. One is written at the end of an
epoch when `every_s` seconds have passed since the last (default `DEFAULT_EVERY_S`, env `HARNESS_CHECKPOINT_S`),
and when a stop signal waited for that epoch (train._fit_stage), so a Ctrl-C loses no finished epoch: the dacon
letter ResNet's checkpoint (309k weights and Adam's two moments) is 3.8 MB and took 22-109 ms to save on 2 loaded
cores, against ~4.7 s an epoch. The checkpoint lives in the worker's store (`mlruns/checkpoints/`), so it resumes a
training on the machine that began it; a worker elsewhere starts the run from epoch 0 and ends with the same
weights.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import atomic_output, kill_point

FOLDER = "checkpoints"  # in the store, beside the preprocessing cache
EVERY_S_ENV = "HARNESS_CHECKPOINT_S"
DEFAULT_EVERY_S = 60.0
FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where a saved training stands: stage `stage` has `epochs` epochs done, and `ended` says it will train no more
    (its count reached, or its plateau criterion met)."""

    stage: int
    epochs: int
    ended: bool


@dataclass(frozen=True)
class Resumed:
    position: Position
    history: list[dict[str, Any]]
    elapsed_s: float  # training time up to the checkpoint, over every attempt (work lost to a crash not counted)


class Checkpoints:
    """The checkpoint of one run, in `folder`; `every_s` None reads `HARNESS_CHECKPOINT_S` (default 60 s)."""

    def __init__(self, folder: Path, run_key: str, every_s: float | None = None) -> None:
        self.path = path_of(folder, run_key)
        self.run_key = run_key
        self.every_s = float(os.environ.get(EVERY_S_ENV, DEFAULT_EVERY_S)) if every_s is None else every_s
        self._last = self._began = time.monotonic()
        self._before_s = 0.0  # training time of earlier attempts, up to the checkpoint this one resumed from

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(self, model: Any, history: list[dict[str, Any]], position: Position) -> None:
        """The model's and optimizer's variables, the history and the position, replacing the previous file."""
        elapsed_s = self._before_s + time.monotonic() - self._began
        meta = {"format": FORMAT, "run_key": self.run_key, "position": vars(position), "history": history,
                "elapsed_s": elapsed_s}
        arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(model.variables)}
        arrays |= {f"optimizer_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        with atomic_output(self.path) as stream:
            stream.write(buffer.getvalue())
        self._last = time.monotonic()
        kill_point("checkpoint")  # crash tests: killed right after a checkpoint, the run resumes from it

    def restore(self, model: Any) -> Resumed | None:
        """Load the saved state into `model` (compiled); None when there is none, or it does not fit this model
        (written by another version of the harness or the model's code: the run starts from epoch 0)."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as saved:
                meta = json.loads(str(saved["meta"]))
                model_arrays = [saved[f"model_{i}"] for i in range(len(model.variables))]
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                optimizer_arrays = [saved[f"optimizer_{i}"] for i in range(len(model.optimizer.variables))]
                extra = len(saved.files) - 1 - len(model_arrays) - len(optimizer_arrays)
        except (OSError, ValueError, KeyError):
            return None
        pairs = [*zip(model.variables, model_arrays, strict=True),
                 *zip(model.optimizer.variables, optimizer_arrays, strict=True)]
        if (meta.get("format") != FORMAT or meta.get("run_key") != self.run_key or extra
                or any(tuple(v.shape) != a.shape for v, a in pairs)):
            return None
        for variable, array in pairs:
            variable.assign(array)
        self._before_s, self._began = meta["elapsed_s"], time.monotonic()
        return Resumed(Position(**meta["position"]), meta["history"], meta["elapsed_s"])


def path_of(folder: Path, run_key: str) -> Path:
    return Path(folder) / f"{run_key}.npz"


def discard(folder: Path, run_key: str) -> None:
    """Delete a run's checkpoint once its result is stored (none there is fine)."""
    path_of(folder, run_key).unlink(missing_ok=True)


def resumed_early_stopping(prior: list[dict[str, Any]], **kwargs: Any) -> Any:
    """Keras's EarlyStopping that, when `fit` begins, first hears the epochs a resumed stage trained before its
    checkpoint: its patience counter and best value are those of the uninterrupted stage."""
    import keras

    class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            super().on_train_begin(logs)
            for row in prior:
                self.on_epoch_end(row["epoch"] - 1, row)

    return ResumedEarlyStopping(**kwargs)
