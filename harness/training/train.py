"""One run: split → stages (each its own preprocessed images and epochs) → evaluate → `RunResult`.

Training returns a result object and never talks to MLflow; `tracking` logs it. A run that diverges
(NaN loss) or whose model raises is returned as a FAILED result with its reason, so a study goes on; an error of
the harness or the machine (a full disk under the preprocessing cache) is raised instead (`is_training_failure`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.files import fault_point, kill_point
from harness.study.design import PlannedRun, Stage
from harness.study.spec import EvaluationConfig
from harness.training import determinism, reuse
from harness.training.batches import shuffled_batches, steps_per_epoch, take_rows
from harness.training.checkpoint import Checkpoints, Position, resumed_early_stopping
from harness.training.model import N_CLASSES
from harness.training.test_shifts import averaged_logits

# Preprocessed images for a stage's pipeline, all rows of the data set, float32 N×H×W in [0, 1].
ImagesFor = Callable[[Stage], np.ndarray]
# Called after each epoch with (epochs done, validation accuracy); True stops the run as PRUNED (Optuna's pruners).
EpochHook = Callable[[int, float], bool]


@dataclass(frozen=True)
class RunResult:
    run: PlannedRun
    status: str  # FINISHED | FAILED | PRUNED
    failure_reason: str = ""
    accuracy: float = math.nan
    loss: float = math.nan
    weights_hash: str = ""
    wall_time_s: float = 0.0
    cpu_time_s: float = math.nan  # CPU seconds of the training process over the training, all threads (workers.py)
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    determinism: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the trained Keras model, kept only when asked (predict)
    stopped: str = ""  # how each stage ended when one may stop on a plateau (`stage_end`), else empty
    resumed: str = ""  # "after epoch N" when it resumed from a checkpoint (wall time adds the earlier attempts')
    out_of_memory: bool = False  # FAILED by an out-of-memory error: the queue may retry it (see runner)


# Set by a worker's SIGINT handler. A KeyboardInterrupt raised at an arbitrary bytecode can land in a library's
# gc callback (jax's, imported by Keras), where Python swallows it; so the interrupt waits for the epoch's end.
STOP_REQUESTED = threading.Event()
PRUNED = "pruned"


def split_indices(digits: np.ndarray, evaluation: EvaluationConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices: a holdout, fold `fold` of a k-fold split, or every row (no validation)."""
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    rows = np.zeros(len(digits))
    if evaluation.method == "all":
        return np.arange(len(digits)), np.arange(0)
    if evaluation.method == "holdout":
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=evaluation.val_fraction, random_state=seed)
        return next(splitter.split(rows, digits))
    folds = StratifiedKFold(n_splits=evaluation.k, shuffle=True, random_state=seed)
    return list(folds.split(rows, digits))[evaluation.fold]


def train_run(run: PlannedRun, ids: np.ndarray, digits: np.ndarray, images_for: ImagesFor,
              on_epoch: EpochHook | None = None, keep_model: bool = False,
              side: dict[str, np.ndarray] | None = None, n_classes: int = N_CLASSES,
              checkpoints: Path | None = None) -> RunResult:
    """Train one planned run; never raises for a training failure (`is_training_failure`).

    `side`: per-row side inputs (fed to a user model that declares them); `n_classes`: labels are 0..n-1.
    `checkpoints`: a folder where the training saves its state now and then and, started again after a crash,
    resumes from it (training.checkpoint). Not with `on_epoch`: a pruner has heard the epochs before the crash.
    The caller discards the checkpoint (`checkpoint.discard`) once the result is stored: a crash while it is
    logged then costs no training.
    """
    started = time.perf_counter()
    saver = Checkpoints(checkpoints, run.run_key) if checkpoints is not None and on_epoch is None else None
    try:
        return _train(run, ids, digits, images_for, started, on_epoch, keep_model, side or {}, n_classes, saver)
    except Exception as err:  # a broken run must not end the study; its reason is recorded
        if not is_training_failure(err):
            raise
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        return RunResult(run, "FAILED", failure_reason=reason, wall_time_s=time.perf_counter() - started,
                         out_of_memory=is_out_of_memory(err))


def is_training_failure(err: Exception) -> bool:
    """Whether an error belongs to the run (its configuration or its numbers: a model that raises, a shape its
    layers refuse, out of memory), and is recorded as its FAILED result, counted done. The harness's own errors
    (HarnessError: a full disk under the preprocessing cache is a DiskWriteError) and the machine's (OSError)
    are not a property of the configuration: they propagate, the worker gives its trial back and exits (one
    line for a HarnessError, the traceback on stderr otherwise), and the run is trained again."""
    return not isinstance(err, (HarnessError, OSError))


OOM_TYPES = {"MemoryError", "ResourceExhaustedError", "OutOfMemoryError"}  # Python, TensorFlow, torch


def is_out_of_memory(err: BaseException) -> bool:
    """Out of host or device memory, by any backend (jax reports RESOURCE_EXHAUSTED in an XlaRuntimeError):
    a fault of the moment (other processes' memory), not of the run, so it is retried."""
    return type(err).__name__ in OOM_TYPES or "RESOURCE_EXHAUSTED" in str(err)


def _train(run: PlannedRun, ids, digits, images_for: ImagesFor, started: float, on_epoch: EpochHook | None,
           keep_model: bool, side: dict[str, np.ndarray], n_classes: int, saver: Checkpoints | None) -> RunResult:
    import keras

    from harness.training.user_model import model_inputs

    determinism.seed_run()
    keras.mixed_precision.set_dtype_policy(run.config.training.precision)
    train_idx, val_idx = split_indices(digits, run.config.evaluation, run.seeds["split"])
    shape = input_shape(images_for(run.stages[0]))
    fresh = build_model(run, shape, n_classes)
    loss_function = make_loss(run, n_classes)
    steps = total_steps(run, len(train_idx))
    jit = jit_for(run)

    def compile_model(model: Any) -> None:
        model.compile(optimizer=make_optimizer(run, steps), loss=loss_function, metrics=["accuracy"], jit_compile=jit)

    key = reuse.architecture_key(model=run.config.model, augmentation=run.config.augmentation, shape=shape,
                                 training=run.config.training, steps=steps, classes=n_classes, jit=jit,
                                 side=sorted(side), backend=run.config.backend)
    model, model_source = reuse.compiled_model(fresh, key, compile_model, keep=not keep_model)

    def inputs(images: np.ndarray, rows: np.ndarray | None = None) -> Any:
        return model_inputs(model, images, side) if rows is None else take_rows(inputs(images), rows)

    resumed = saver.restore(model) if saver is not None else None
    at = resumed.position if resumed is not None else Position(0, 0, False)
    history: list[dict[str, Any]] = resumed.history if resumed is not None else []
    resumed_after = f"after epoch {len(history)}" if resumed is not None else ""
    started -= resumed.elapsed_s if resumed is not None else 0.0  # wall time counts every attempt's kept epochs
    ends: list[str] = []
    for stage_index, stage in enumerate(run.stages):
        if stage_index < at.stage or (stage_index == at.stage and at.ended):  # trained before the checkpoint
            ends.append(stage_end(stage, epochs_of(stage, history)))
            continue
        images = inputs(images_for(stage))
        failure = _fit_stage(model, run, stage, stage_index, images, digits, train_idx, val_idx, history, on_epoch,
                             n_classes, saver)
        if failure.startswith(PRUNED):
            accuracy = history[-1].get("val_accuracy", math.nan)
            return RunResult(run, "PRUNED", failure, accuracy=accuracy, history=history,
                             wall_time_s=time.perf_counter() - started)
        if failure:
            return RunResult(run, "FAILED", failure, history=history, wall_time_s=time.perf_counter() - started)
        ends.append(stage_end(stage, epochs_of(stage, history)))
    measured = {"weights_hash": weights_hash(model), "history": history, "model": model if keep_model else None,
                "resumed": resumed_after,
                "stopped": " · ".join(ends) if any(stage.plateau for stage in run.stages) else "",
                "determinism": {**determinism.read_back(run.config.determinism.xla), "model": model_source}}
    if len(val_idx) == 0:  # trained on every row (predict): nothing left to measure
        return RunResult(run, "FINISHED", wall_time_s=time.perf_counter() - started, **measured)
    x_val = inputs(images_for(run.stages[-1]), val_idx)
    logits = averaged_logits(lambda x: model.predict(x, batch_size=512, verbose=0), x_val,
                             run.config.evaluation.test_shifts)
    loss = float(loss_function(targets(digits[val_idx], run, n_classes), logits))
    predictions = validation_predictions(ids[val_idx], digits[val_idx], logits)
    return RunResult(
        run,
        "FINISHED",
        accuracy=float((predictions["pred"].to_numpy() == digits[val_idx]).mean()),
        loss=loss,
        wall_time_s=time.perf_counter() - started,
        predictions=predictions,
        **measured,
    )


def validation_predictions(ids: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    """One row per validation image: id, label, the predicted class, and the softmax of every class (`p0`..), so
    a report can average seeds' softmax the way `predict --ensemble` serves them, not only count their votes."""
    from scipy.special import softmax

    probabilities = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    frame = pd.DataFrame({"id": ids, "label": labels, "pred": np.asarray(logits).argmax(axis=1)})
    columns = pd.DataFrame(probabilities.round(6), columns=[f"p{c}" for c in range(probabilities.shape[1])])
    return pd.concat([frame, columns], axis=1)


def jit_for(run: PlannedRun) -> bool:
    """`compile(jit_compile=...)` for the run: `xla` is TensorFlow's switch; jax always compiles with XLA and
    torch.compile is not used (harness.training.replay compiles its replay the same way)."""
    return run.config.determinism.xla if run.config.backend == "tensorflow" else run.config.backend == "jax"


def input_shape(images: np.ndarray) -> tuple[int, int, int]:
    """(height, width, channels) of one image of a stage's N×H×W(×C) array."""
    return (*images.shape[1:3], images.shape[3] if images.ndim == 4 else 1)


def build_model(run: PlannedRun, shape: tuple[int, int, int], n_classes: int) -> Any:
    """A new, uncompiled model for the run: its builder file's, or the built-in CNN, seeded from the run's seeds."""
    from harness.training.model import build_cnn
    from harness.training.user_model import build_user_model

    if run.config.model.builder:
        return build_user_model(run.config.model, shape, n_classes, run.seeds)
    return build_cnn(shape[0], run.config.model, run.config.augmentation, run.seeds, shape[2], n_classes)


def _fit_stage(
    model,
    run: PlannedRun,
    stage: Stage,
    stage_index: int,
    images,
    digits,
    train_idx,
    val_idx,
    history: list[dict[str, Any]],
    on_epoch: EpochHook | None = None,
    n_classes: int = N_CLASSES,
    saver: Checkpoints | None = None,
) -> str:
    """Fit one stage's epochs, appending per-epoch rows to `history`, from where a checkpoint left it (rows of
    this stage already in `history`); returns a failure reason or ''."""
    import keras

    prior = [row for row in history if row["stage"] == stage.name]  # trained before a checkpoint
    first_epoch = len(history) - len(prior)
    order_seed = stage_order_seed(run, stage_index)
    labels = targets(digits, run, n_classes)
    train, steps = shuffled_batches(take_rows(images, train_idx), labels[train_idx], run.config.training.batch_size,
                                    order_seed, stage.max_epochs, start=len(prior))
    clock = {"start": time.perf_counter()}
    pruned: list[int] = []

    def record(epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        kill_point("epoch")  # crash tests: SIGKILL in the middle of a training
        fault_point("epoch")  # fault tests: MemoryError in the middle of a training
        history.append(
            {
                "epoch": epoch + 1,
                "stage": stage.name,
                "epoch_time_s": now - clock["start"],
                **{key: float(value) for key, value in logs.items()},
            }
        )
        clock["start"] = now
        if on_epoch is not None and on_epoch(len(history), float(logs.get("val_accuracy", math.nan))):
            model.stop_training = True
            pruned.append(len(history))

    def end_epoch(epoch: int, logs: dict[str, float]) -> None:
        """Last, after the plateau criterion (it may end the stage): a checkpoint when one is due or a stop was
        asked for (so a Ctrl-C loses no epoch), then the stop."""
        done, stopping = len(history) - first_epoch, STOP_REQUESTED.is_set()
        if saver is not None and (saver.due() or stopping) and math.isfinite(logs.get("loss", math.nan)):
            ended = done == stage.max_epochs or bool(model.stop_training)
            saver.save(model, history, Position(stage_index, done, ended))
        if stopping:
            raise KeyboardInterrupt

    model.fit(
        train,
        steps_per_epoch=steps,
        epochs=first_epoch + stage.max_epochs,
        initial_epoch=first_epoch + len(prior),
        validation_data=(take_rows(images, val_idx), labels[val_idx]) if len(val_idx) else None,
        validation_batch_size=512,
        shuffle=False,  # `shuffled_batches` shuffles, seeded by the data-order seed
        callbacks=[keras.callbacks.TerminateOnNaN(), keras.callbacks.LambdaCallback(on_epoch_end=record),
                   *plateau_callbacks(stage, prior), keras.callbacks.LambdaCallback(on_epoch_end=end_epoch)],
        verbose=0,
    )
    last_loss = history[-1]["loss"] if len(history) > first_epoch else math.nan
    if not math.isfinite(last_loss):
        return f"loss became {last_loss} in epoch {len(history)} (stage '{stage.name}')"
    return f"{PRUNED} after epoch {pruned[0]}" if pruned else ""


def plateau_callbacks(stage: Stage, prior: list[dict[str, Any]] | None = None) -> list[Any]:
    """Keras's EarlyStopping for a stage that ends on a plateau (none for a fixed count).

    It hears the stage's `prior` epochs (trained before a checkpoint) first, then the new ones.
    It reads `loss` or `accuracy`, the means over the epoch's training batches, never `val_*` (the scored fold:
    spec.Plateau says why). The stage keeps its last epoch's weights (no `restore_best_weights`): the best epoch by
    a training metric is no better choice for new images, and a rollback would pair earlier weights with the
    optimizer's later state in the next stage.
    """
    plateau = stage.plateau
    if plateau is None:
        return []
    mode = "min" if plateau.monitor == "loss" else "max"
    return [resumed_early_stopping(prior or [], monitor=plateau.monitor, min_delta=plateau.min_delta,
                                   patience=plateau.patience, mode=mode)]


def epochs_of(stage: Stage, history: list[dict[str, Any]]) -> int:
    return sum(row["stage"] == stage.name for row in history)


def stage_end(stage: Stage, trained: int) -> str:
    """How a stage that ran to its end ended: `name: plateau at 37/300` (stopped by its criterion), `name: max
    300/300` (never reached a plateau), `name: fixed 12` (a count). Pruning and failures end the run instead."""
    if stage.plateau is None:
        return f"{stage.name}: fixed {trained}"
    return f"{stage.name}: {'plateau at' if trained < stage.max_epochs else 'max'} {trained}/{stage.max_epochs}"


def stage_order_seed(run: PlannedRun, stage_index: int) -> int:
    """The seed of a stage's data order: from the run's order seed, different for every stage."""
    return int(np.random.SeedSequence([run.seeds["order"], stage_index]).generate_state(1)[0] >> 1)


def total_steps(run: PlannedRun, n_train: int) -> int:
    """Optimizer steps over all stages, a plateau stage's at its `max`: the span a cosine schedule decays over (so
    a stage's rate at epoch e is the same whether or not it will stop early)."""
    return steps_per_epoch(n_train, run.config.training.batch_size) * sum(stage.max_epochs for stage in run.stages)


def make_optimizer(run: PlannedRun, steps: int) -> Any:
    import keras

    training = run.config.training
    rate: Any = training.learning_rate
    if training.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(training.learning_rate, decay_steps=steps)
    kinds = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return kinds[training.optimizer](learning_rate=rate)


def make_loss(run: PlannedRun, n_classes: int = N_CLASSES) -> Any:
    """Sparse labels unless smoothing is asked for (Keras smooths only one-hot targets)."""
    import keras

    smoothing = run.config.training.label_smoothing
    if smoothing:
        return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def targets(digits: np.ndarray, run: PlannedRun, n_classes: int = N_CLASSES) -> np.ndarray:
    """What the loss compares logits with: digits, or their one-hot rows when labels are smoothed."""
    if run.config.training.label_smoothing:
        return np.eye(n_classes, dtype="float32")[digits]
    return digits


def weights_hash(model: Any) -> str:
    """sha256 over every weight's bytes: equal hashes mean bit-identical models."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()
