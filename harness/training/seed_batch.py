"""Seed-batched training (`execution: {batch_seeds: K}`, jax backend): K replicates of one configuration trained
by one compiled step.

Why: a small CNN at batch 32-64 leaves most of a GPU idle, and one training at a time pays its own dispatch and
step overhead. `jax.vmap` over K copies of the model's variables turns K trainings into one program.

Each lane is a whole run: its own build (init, dropout and augmentation seeds, which live in the model's seed
generator variables), its own split, its own data order (the same permutations as one-at-a-time training,
`batches.epoch_order`), its own optimizer state. vmap keeps every reduction inside its lane, so a lane's result
depends on its run and on K, not on the other lanes' runs; a batch with fewer than K runs is padded with copies
of its first run's lane (trained, then dropped), so every run is computed by the same K-lane program.

XLA's batched kernels are not the one-at-a-time kernels: a seed-batched run is reproducible (the same run at the
same K gives the same weights, tests/training/test_seed_batch.py) but not bit-identical to the same run trained
alone, so `execution.batch_seeds` is part of the run's config and key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.files import fault_point, kill_point
from harness.study.design import PlannedRun
from harness.training import determinism
from harness.training.batches import FIRST_ORDER, epoch_order
from harness.training.train import (
    STOP_REQUESTED,
    ImagesFor,
    RunResult,
    build_model,
    input_shape,
    is_out_of_memory,
    is_training_failure,
    make_loss,
    make_optimizer,
    split_indices,
    stage_order_seed,
    targets,
    total_steps,
    validation_predictions,
    weights_hash,
)

EVAL_ROWS = 512  # validation rows per lane and call, as one-at-a-time training's validation_batch_size


def train_batch(runs: list[PlannedRun], ids: np.ndarray, digits: np.ndarray, images_for: ImagesFor,
                side: dict[str, np.ndarray] | None = None, n_classes: int = 10) -> list[RunResult]:
    """Train runs that differ only in their seeds (equal `batch_key`) as one K-lane program; one result per run.

    Never raises for a training failure: a lane whose loss diverges fails alone; an error fails every run. An
    error of the harness or the machine is raised (`train.is_training_failure`)."""
    started = time.perf_counter()
    try:
        return Batch(runs, digits, images_for, side or {}, n_classes).train(ids, started)
    except Exception as err:  # a broken batch must not end the study; its reason is recorded on each run
        if not is_training_failure(err):
            raise
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
        share = (time.perf_counter() - started) / len(runs)
        return [RunResult(run, "FAILED", failure_reason=reason, wall_time_s=share, out_of_memory=is_out_of_memory(err))
                for run in runs]


@dataclass
class Lanes:
    """Every lane's variables, stacked on a leading axis of size K (jax arrays)."""

    trainable: list[Any]
    non_trainable: list[Any]
    optimizer: list[Any]


class Batch:
    """K lanes of one configuration: their models, splits, and the vmapped train and eval steps."""

    def __init__(self, runs: list[PlannedRun], digits: np.ndarray, images_for: ImagesFor,
                 side: dict[str, np.ndarray], n_classes: int) -> None:
        import keras

        lead = runs[0]
        self.lanes_count = lead.config.execution.batch_seeds
        if len({run.batch_key for run in runs}) != 1 or len(runs) > self.lanes_count:
            raise ValueError(f"a seed batch takes up to {self.lanes_count} runs of one configuration")
        if keras.backend.backend() != "jax":
            raise ValueError(f"seed-batched training needs the jax backend, this process has "
                             f"{keras.backend.backend()}")
        self.runs, self.digits, self.images_for, self.side, self.n_classes = runs, digits, images_for, side, n_classes
        determinism.seed_run()
        self.shape = input_shape(images_for(lead.stages[0]))
        self.models = [build_model(run, self.shape, n_classes) for run in runs]
        self.splits = [split_indices(digits, run.config.evaluation, run.seeds["split"]) for run in runs]
        sizes = {(len(train), len(val)) for train, val in self.splits}
        if len(sizes) != 1:
            raise ValueError(f"the runs' splits differ in size ({sorted(sizes)}); a seed batch needs equal sizes")
        self.n_train, self.n_val = sizes.pop()
        self.loss = make_loss(lead, n_classes)
        self.optimizer = make_optimizer(lead, total_steps(lead, self.n_train))
        self.optimizer.build(self.models[0].trainable_variables)
        self.state = self._stack()
        self.train_step, self.eval_step = self._compile()

    def _pad(self, per_run: list[Any]) -> list[Any]:
        """One entry per lane: the runs', then copies of the first run's until K."""
        return per_run + [per_run[0]] * (self.lanes_count - len(per_run))

    def _stack(self) -> Lanes:
        import jax.numpy as jnp

        def stacked(per_model: list[list[Any]]) -> list[Any]:
            for index, variables in enumerate(per_model[1:], start=1):
                shapes = [tuple(v.shape) for v in variables]
                if shapes != [tuple(v.shape) for v in per_model[0]]:
                    raise ValueError(f"run {self.runs[index].name} builds a model of other shapes than "
                                     f"{self.runs[0].name}; a seed batch needs one architecture")
            return [jnp.stack(self._pad([np.asarray(v) for v in column])) for column in zip(*per_model, strict=True)]

        start = [np.asarray(v) for v in self.optimizer.variables]
        return Lanes(trainable=stacked([m.trainable_variables for m in self.models]),
                     non_trainable=stacked([m.non_trainable_variables for m in self.models]),
                     optimizer=[jnp.stack([value] * self.lanes_count) for value in start])

    def _compile(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The jitted K-lane steps. Inputs stay whole on the device; each lane gathers its own rows inside."""
        import jax
        import jax.numpy as jnp

        model, loss, optimizer = self.models[0], self.loss, self.optimizer

        def lane_train(trainable, non_trainable, optimizer_vars, rows, inputs, labels):
            x = jax.tree.map(lambda array: array[rows], inputs)
            y = labels[rows]

            def objective(weights):
                logits, new_non_trainable, losses = model.stateless_call(weights, non_trainable, x, training=True,
                                                                         return_losses=True)
                return loss(y, logits) + sum(losses), (new_non_trainable, logits)

            (value, (non_trainable, logits)), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
            correct = jnp.sum(jnp.argmax(logits, axis=-1) == _label_index(y))
            return trainable, non_trainable, optimizer_vars, value, correct

        def lane_logits(trainable, non_trainable, rows, inputs):
            x = jax.tree.map(lambda array: array[rows], inputs)
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return logits

        train = jax.jit(jax.vmap(lane_train, in_axes=(0, 0, 0, 0, None, None)), donate_argnums=(0, 1, 2))
        evaluate = jax.jit(jax.vmap(lane_logits, in_axes=(0, 0, 0, None)))
        return train, evaluate

    def train(self, ids: np.ndarray, started: float) -> list[RunResult]:
        from harness.training.user_model import model_inputs

        lead = self.runs[0]
        labels = targets(self.digits, lead, self.n_classes)
        histories: list[list[dict[str, Any]]] = [[] for _ in self.runs]
        failures = [""] * len(self.runs)
        logits = np.zeros((len(self.runs), self.n_val, self.n_classes), dtype="float32")
        device_labels = _on_device(labels)
        for stage_index, stage in enumerate(lead.stages):
            inputs = _on_device(model_inputs(self.models[0], self.images_for(stage), self.side))
            # a fixed count: a stage that may stop on a plateau is refused with batch_seeds > 1 (spec.RunConfig)
            orders = self._pad([self._stage_orders(run, train_rows, stage_index, stage.max_epochs)
                                for run, (train_rows, _) in zip(self.runs, self.splits, strict=True)])
            for epoch in range(stage.max_epochs):
                clock = time.perf_counter()
                losses, accuracies = self._epoch([order[epoch] for order in orders], inputs, device_labels)
                logits = self._logits(inputs)
                elapsed = time.perf_counter() - clock
                for lane, history in enumerate(histories):
                    if failures[lane]:  # stopped, as TerminateOnNaN stops a run alone: its lane runs on unread
                        continue
                    history.append({"epoch": len(history) + 1, "stage": stage.name, "epoch_time_s": elapsed,
                                    "loss": float(losses[lane]), "accuracy": float(accuracies[lane]),
                                    **self._validation(lane, logits[lane], labels)})
                    if not math.isfinite(losses[lane]):
                        failures[lane] = (f"loss became {losses[lane]} in epoch {len(history)} "
                                          f"(stage '{stage.name}')")
                kill_point("epoch")  # crash tests: SIGKILL in the middle of a training
                fault_point("epoch")
                if STOP_REQUESTED.is_set():
                    raise KeyboardInterrupt
                if all(failures):
                    return self._results(ids, histories, failures, logits, time.perf_counter() - started)
        return self._results(ids, histories, failures, logits, time.perf_counter() - started)

    def _stage_orders(self, run: PlannedRun, train_rows: np.ndarray, stage_index: int, epochs: int) -> list[Any]:
        """Each epoch's training rows in order, as one-at-a-time training feeds them (`batches.shuffled_batches`)."""
        seed = stage_order_seed(run, stage_index)
        return [train_rows[epoch_order(len(train_rows), seed, epoch)]
                for epoch in range(FIRST_ORDER, FIRST_ORDER + epochs)]

    def _epoch(self, orders: list[np.ndarray], inputs: Any, labels: Any) -> tuple[list[float], list[float]]:
        """One epoch of every lane; per lane the mean training loss (weighted by batch size, as Keras reports it)
        and the training accuracy. `inputs` and `labels` are already on the device."""
        import jax.numpy as jnp

        rows = np.stack(orders)  # K × n_train
        batch = self.runs[0].config.training.batch_size
        losses, hits = [], []  # kept on the device: reading them each step would wait for every step
        state = self.state
        for begin in range(0, self.n_train, batch):
            chunk = jnp.asarray(rows[:, begin:begin + batch])
            *variables, loss, correct = self.train_step(state.trainable, state.non_trainable, state.optimizer, chunk,
                                                        inputs, labels)
            state = Lanes(*variables)
            losses.append(loss * chunk.shape[1])
            hits.append(correct)
        self.state = state
        count = len(self.runs)
        loss_sum, correct_sum = np.asarray(jnp.stack(losses).sum(axis=0)), np.asarray(jnp.stack(hits).sum(axis=0))
        return list(loss_sum[:count] / self.n_train), list(correct_sum[:count] / self.n_train)

    def _logits(self, inputs: Any) -> np.ndarray:
        """Every run's validation logits (runs × n_val × classes), on its own validation rows."""
        import jax.numpy as jnp

        if self.n_val == 0:
            return np.zeros((len(self.runs), 0, self.n_classes), dtype="float32")
        rows = np.stack(self._pad([val for _, val in self.splits]))
        parts = [np.asarray(self.eval_step(self.state.trainable, self.state.non_trainable,
                                           jnp.asarray(rows[:, begin:begin + EVAL_ROWS]), inputs))
                 for begin in range(0, self.n_val, EVAL_ROWS)]
        return np.concatenate(parts, axis=1)[: len(self.runs)]

    def _validation(self, lane: int, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        if self.n_val == 0:
            return {}
        rows = self.splits[lane][1]
        return {"val_loss": float(self.loss(labels[rows], logits)),
                "val_accuracy": float((logits.argmax(axis=1) == self.digits[rows]).mean())}

    def _results(self, ids: np.ndarray, histories: list[list[dict[str, Any]]], failures: list[str],
                 logits: np.ndarray, elapsed: float) -> list[RunResult]:
        """Each run's result, its variables copied back into its own model (the weights hash reads them there).

        `wall_time_s` is the run's share of the batch's time: the batch took `elapsed` for all its runs."""
        share = elapsed / len(self.runs)
        setting = {**determinism.read_back(False), "model": f"seed-batched: {len(self.runs)} runs in "
                                                             f"{self.lanes_count} lanes"}
        results = []
        for lane, (run, model) in enumerate(zip(self.runs, self.models, strict=True)):
            if failures[lane]:
                results.append(RunResult(run, "FAILED", failures[lane], history=histories[lane], wall_time_s=share))
                continue
            for variables, stacked in ((model.trainable_variables, self.state.trainable),
                                       (model.non_trainable_variables, self.state.non_trainable)):
                for variable, values in zip(variables, stacked, strict=True):
                    variable.assign(values[lane])
            measured: dict[str, Any] = {"weights_hash": weights_hash(model), "history": histories[lane],
                                        "determinism": setting, "wall_time_s": share}
            val_rows = self.splits[lane][1]
            if len(val_rows) == 0:
                results.append(RunResult(run, "FINISHED", **measured))
                continue
            last = histories[lane][-1]
            predictions = validation_predictions(ids[val_rows], self.digits[val_rows], logits[lane])
            results.append(RunResult(run, "FINISHED", accuracy=last["val_accuracy"], loss=last["val_loss"],
                                     predictions=predictions, **measured))
        return results


def _label_index(y: Any) -> Any:
    """Class indices from sparse labels or one-hot (smoothed) targets."""
    import jax.numpy as jnp

    return jnp.argmax(y, axis=-1) if y.ndim > 1 else y


def _on_device(inputs: Any) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, inputs)
