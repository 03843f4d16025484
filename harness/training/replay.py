"""Replay a run's first K training steps in a fresh process, exactly as it trained, hashing every weight after
each step, in lockstep with `harness explain` (harness.execution.trace), which stops both sides where they part.

Exactly as it trained: the process gets the run's backend, threads and determinism before Keras loads
(`determinism.configure_process`), then the run is built, seeded, split and compiled by `harness.training.train`'s
own functions, and its steps are `fit`'s own compiled train step over `shuffled_batches` (the same data order,
augmentation and dropout draws), with a callback that hashes the weights after each step. Ordinary runs never
see that callback; only explain starts a replay. The protocol, over a `multiprocessing` connection:

    side → parent: ("ready", info), then ("step", k, hashes, seconds) after step 0 (the build) and each step k
                   (seconds: spent so far hashing and copying state, and waiting for the parent);
                   ("dumped", path) or ("probed", path), ("end", k) when the training has no step k + 1,
                   ("error", one line)
    parent → side: ("next",) go on; ("dump", folder) write the weights as they are now; ("load", path) take
                   these weights (→ ("loaded", hashes)); ("probe", folder) take the last step apart
                   (harness.training.probe); ("stop",)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.study.spec import RunConfig


@dataclass(frozen=True)
class ReplayRequest:
    """One side of a trace; picklable, so a spawned process gets it before it imports any backend."""

    label: str  # "A" or "B"
    config: RunConfig  # the run's config, seeds as it trained (none fresh)
    data: dict[str, Any]  # the study's `data:` section (absolute paths)
    cache_dir: str  # the preprocessing cache
    steps: int | None  # K; None: the first epoch


class _Stop(Exception):
    """The parent has what it needs: leave `fit` and end the process."""


def serve(request: ReplayRequest, conn: Any) -> None:
    """A replay process's entry: configure the process as the run's was, then replay until told to stop."""
    import warnings

    from harness.training import determinism

    warnings.simplefilter("ignore", UserWarning)  # Keras notes on a replay (jit fallbacks): not the user's to act on
    try:
        determinism.configure_process(request.config.determinism, request.config.backend)
        _replay(request, conn)
    except (_Stop, KeyboardInterrupt):  # done, or a Ctrl-C to the group: the parent reports the interrupt
        pass
    except Exception as err:  # the parent reports it in one line (a builder that fails, data that is gone)
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        conn.send(("error", f"{type(err).__name__}: {text}"))
    finally:
        conn.close()
        sys.stdout.flush()


def _replay(request: ReplayRequest, conn: Any) -> None:
    import keras

    from harness.study.design import effective_seeds, make_run, resolve_stages
    from harness.study.sections import DataConfig
    from harness.training import determinism, train
    from harness.training.batches import shuffled_batches, steps_per_epoch, take_rows
    from harness.training.probe import variable_hashes, weight_names
    from harness.training.sources import load_study_data
    from harness.training.user_model import model_inputs

    data = load_study_data(DataConfig.model_validate(request.data))
    config = request.config
    run = make_run("replay", 0, {}, config, effective_seeds(config, 0), resolve_stages(config, data.images.shape[1]),
                   data.fingerprint)
    cache = Path(request.cache_dir)

    def images_for(stage: Any) -> np.ndarray:
        return data.images_for(stage, cache)

    # what `train._train` does before its first step, in its order
    determinism.seed_run()
    keras.mixed_precision.set_dtype_policy(config.training.precision)
    train_idx, _ = train.split_indices(data.digits, config.evaluation, run.seeds["split"])
    model = train.build_model(run, train.input_shape(images_for(run.stages[0])), data.n_classes)
    model.compile(optimizer=train.make_optimizer(run, train.total_steps(run, len(train_idx))),
                  loss=train.make_loss(run, data.n_classes), metrics=["accuracy"], jit_compile=train.jit_for(run))
    model.optimizer.build(model.trainable_variables)
    per_epoch = steps_per_epoch(len(train_idx), config.training.batch_size)
    info = {"steps": request.steps or per_epoch, "steps_per_epoch": per_epoch,
            "total_steps": train.total_steps(run, len(train_idx)), "weights": weight_names(model),
            "fingerprint": data.fingerprint,
            "determinism": {**determinism.read_back(config.determinism.xla), "device": _device(config.backend)}}
    conn.send(("ready", info))
    tracer = _tracer(model, conn, config.training.batch_size)
    tracer.report(0, variable_hashes(model.weights))
    labels = train.targets(data.digits, run, data.n_classes)
    epochs_done = 0
    for stage_index, stage in enumerate(run.stages):
        images = take_rows(model_inputs(model, images_for(stage), data.side), train_idx)
        order_seed = train.stage_order_seed(run, stage_index)
        tracer.stage(images, labels[train_idx], order_seed)
        batches, steps = shuffled_batches(images, labels[train_idx], config.training.batch_size, order_seed,
                                          stage.max_epochs)
        fitted = model.fit(batches, steps_per_epoch=steps, epochs=epochs_done + stage.max_epochs,
                           initial_epoch=epochs_done, shuffle=False,
                           callbacks=[tracer, *train.plateau_callbacks(stage)], verbose=0)
        epochs_done += len(fitted.epoch)  # a plateau stage ends where the run's did
    conn.send(("end", tracer.step))
    _serve_commands(conn, model, None)


def _device(backend: str) -> str:
    """`gpu` when the backend sees one, else `cpu`: a cause names the device its kernels ran on."""
    from harness.env import backend_build

    kinds = {part.split(":")[0].strip().lower() for part in backend_build(backend)["devices"].split(",")}
    return "gpu" if kinds & {"gpu", "cuda"} else "cpu"


def _tracer(model: Any, conn: Any, batch_size: int) -> Any:
    """The `fit` callback: after each step, hash the weights, tell the parent, and do what it says."""
    import keras

    from harness.training.batches import step_rows, take_rows
    from harness.training.probe import snapshot, variable_hashes

    class Tracer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0  # steps done over the whole training
            self.before: list[np.ndarray] = snapshot(model)  # the state the current step starts from
            self.stage_step, self.batches = 0, (None, None, 0)
            self.seconds = {"tracing": 0.0, "waiting": 0.0}  # hashing and state copies; waiting for the parent

        def stage(self, x: Any, y: np.ndarray, order_seed: int) -> None:
            self.stage_step, self.batches = 0, (x, y, order_seed)

        def report(self, step: int, hashes: list[str]) -> None:
            conn.send(("step", step, hashes, dict(self.seconds)))
            waited = time.perf_counter()
            x, y, seed = self.batches
            batch = None
            if step > 0:
                rows = step_rows(len(y), batch_size, seed, self.stage_step - 1)
                batch = (take_rows(x, rows), y[rows])
            _serve_commands(conn, model, (batch, self.before))
            copied = time.perf_counter()
            self.before = snapshot(model)
            self.seconds["waiting"] += copied - waited
            self.seconds["tracing"] += time.perf_counter() - copied

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            started = time.perf_counter()
            sync = getattr(model, "jax_state_sync", None)
            if sync is not None:  # jax keeps the state outside the variables during `fit`
                sync()
            self.step += 1
            self.stage_step += 1
            hashes = variable_hashes(model.weights)
            self.seconds["tracing"] += time.perf_counter() - started
            self.report(self.step, hashes)

    return Tracer()


def _serve_commands(conn: Any, model: Any, last: tuple[Any, list[np.ndarray]] | None) -> None:
    """Answer the parent until it says `next` (return) or `stop` (leave `fit`)."""
    from harness.training.probe import probe_step, variable_hashes

    while True:
        command, *args = conn.recv()
        if command == "next":
            return
        if command == "stop":
            raise _Stop()
        folder = Path(args[0])
        if command == "dump":
            path = folder / "weights.npz"
            np.savez(path, *[np.asarray(w) for w in model.weights])
            conn.send(("dumped", str(path)))
        elif command == "load":  # the other side's weights (same shapes and dtypes), to go on from equal weights
            with np.load(args[0]) as saved:
                values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            if [(v.shape, v.dtype) for v in values] == [(tuple(w.shape), np.asarray(w).dtype) for w in model.weights]:
                for weight, value in zip(model.weights, values, strict=True):
                    weight.assign(value)
            conn.send(("loaded", variable_hashes(model.weights)))
        elif command == "probe" and last is not None and last[0] is not None:
            (x, y), before = last
            probed = probe_step(model, x, y, before)
            path = folder / "probe.npz"
            arrays = {f"{part}/{i}": entry[2] for part in ("forward", "gradient", "update")
                      for i, entry in enumerate(probed[part])}
            np.savez(path, **arrays)
            meta = {part: [(name, op, bool(random)) for name, op, _, random in probed[part]]
                    for part in ("forward", "gradient", "update")}
            conn.send(("probed", str(path), meta, probed["after"]))
        else:
            conn.send(("error", f"replay: cannot {command} here"))
