"""One training step taken apart: each layer's output in graph order, each gradient, and the update.

`harness explain` replays two runs (harness.training.replay) until their weights part at step k; each side then
puts its state back to where step k started (weights, optimizer, seed-generator states) and runs step k's batch
through here, so the two sides' internals can be compared array by array (harness.analysis.divergence). The
gradient and the update follow Keras' own `train_step` for the backend (tensorflow: a GradientTape; jax:
`compute_loss_and_updates` under `jax.value_and_grad` and the optimizer's `stateless_apply`; torch: `backward`),
compiled as `fit` compiles it, so the update reproduces the traced step; whether it did is reported back.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

# One probed array: (name, op type, value, draws random numbers)
Entry = tuple[str, str, np.ndarray, bool]


def variable_hashes(variables: list[Any]) -> list[str]:
    """A short sha256 per variable's bytes: what the replay sends after every step."""
    return [hashlib.sha256(np.ascontiguousarray(np.asarray(v)).tobytes()).hexdigest()[:20] for v in variables]


def snapshot(model: Any) -> list[np.ndarray]:
    """Every variable a step reads or writes: the model's (weights, seed-generator states) and the optimizer's."""
    return [np.array(v) for v in (*model.variables, *model.optimizer.variables)]


def restore(model: Any, values: list[np.ndarray]) -> None:
    for variable, value in zip((*model.variables, *model.optimizer.variables), values, strict=True):
        variable.assign(value)


def owners(model: Any) -> dict[int, Any]:
    """Each weight's innermost layer (a nested model's layers own their weights, not the nested model)."""
    found: dict[int, Any] = {}

    def walk(layer: Any) -> None:
        for weight in layer.weights:
            found[id(weight)] = layer
        for inner in getattr(layer, "layers", []):
            walk(inner)

    for layer in getattr(model, "layers", []):
        walk(layer)
    return found


def weight_names(model: Any) -> list[tuple[str, str]]:
    """(path, the owning layer's class) of every weight, in `model.weights` order."""
    owner = owners(model)
    return [(w.path, type(owner.get(id(w), model)).__name__) for w in model.weights]


def graph_layers(model: Any) -> list[Any]:
    """The model's layers in graph order whose output is one tensor (a functional model); [] for a subclassed one."""
    import keras

    chosen = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # called more than once (shared), or never
            continue
        if not isinstance(output, list | tuple | dict):
            chosen.append(layer)
    return chosen


def _random(layer: Any) -> bool:
    """A layer with a seed generator (augmentation, dropout, noise): its variables hold more than its weights."""
    return len(layer.variables) > len(layer.weights)


def probe_step(model: Any, x: Any, y: np.ndarray, before: list[np.ndarray]) -> dict[str, Any]:
    """Step k from the state `before` it: {forward, gradient, update: [Entry], after: weight hashes}."""
    import keras

    layers = graph_layers(model)
    restore(model, before)
    if layers:
        features = keras.Model(model.input, [layer.output for layer in layers])  # the input structure as built
        outputs = features(x, training=True)
        forward = [(layer.name, type(layer).__name__, keras.ops.convert_to_numpy(out), _random(layer))
                   for layer, out in zip(layers, outputs, strict=True)]
    else:  # a subclassed model: only its output can be compared
        out = model(x, training=True)
        forward = [(model.name, type(model).__name__, keras.ops.convert_to_numpy(out), False)]
    restore(model, before)
    gradients, after = {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}[
        keras.backend.backend()](model, x, y)
    owner = owners(model)
    named = [(v.path, type(owner.get(id(v), model)).__name__) for v in model.trainable_variables]
    gradient = [(path, op, np.asarray(g), False) for (path, op), g in zip(named, gradients, strict=True)]
    update = [(path, op, value, False) for (path, op), value in zip(weight_names(model), after, strict=True)]
    return {"forward": forward, "gradient": gradient, "update": update, "after": variable_hashes(after)}


def _tensorflow_step(model: Any, x: Any, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keras' TensorFlow `train_step`, its gradients returned, compiled like `fit`'s (tf.function, jit_compile)."""
    import tensorflow as tf

    trainable = model.trainable_weights

    def step(x: Any, y: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.optimizer.scale_loss(model.compute_loss(x=x, y=y, y_pred=y_pred, training=True))
        gradients = tape.gradient(loss, trainable)
        model.optimizer.apply_gradients(zip(gradients, trainable, strict=True))
        return gradients

    # as `fit`'s batches come: the batch axis unknown when traced (a known one changes the kernels chosen)
    signature = tf.nest.map_structure(lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), (x, y))
    compiled = tf.function(step, input_signature=list(signature), jit_compile=bool(getattr(model, "jit_compile",
                                                                                             False)))
    gradients = compiled(x, y)
    # an embedding's gradient is IndexedSlices (dense here); an unused weight's is None (zeros)
    dense = [np.zeros(w.shape, w.dtype) if g is None else tf.convert_to_tensor(g).numpy()
             for g, w in zip(gradients, trainable, strict=True)]
    return dense, [np.array(w) for w in model.weights]


def _jax_step(model: Any, x: Any, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keras' jax `train_step`: `compute_loss_and_updates` under `jax.value_and_grad`, jitted like `fit`'s."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]
    optimizer = [v.value for v in model.optimizer.variables]

    def step(trainable: Any, non_trainable: Any, optimizer: Any, x: Any, y: Any) -> Any:
        (_, aux), grads = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)(
            trainable, non_trainable, metrics, x, y, None, training=True, optimizer_variables=optimizer)
        new_trainable, _ = model.optimizer.stateless_apply(optimizer, grads, trainable)
        return grads, new_trainable, aux[2]

    grads, new_trainable, new_non_trainable = jax.jit(step)(trainable, non_trainable, optimizer, x, y)
    values = {id(v): np.asarray(new) for v, new in zip(model.trainable_variables, new_trainable, strict=True)}
    values |= {id(v): np.asarray(new) for v, new in zip(model.non_trainable_variables, new_non_trainable,
                                                          strict=True)}
    return [np.asarray(g) for g in grads], [values[id(w)] for w in model.weights]


def _torch_step(model: Any, x: Any, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keras' torch `train_step`: `backward` on the loss, then the optimizer, eagerly as `fit` runs it."""
    import keras
    import torch

    y_pred = model(x, training=True)
    model.zero_grad()
    loss = model.optimizer.scale_loss(model.compute_loss(x=x, y=keras.ops.convert_to_tensor(y), y_pred=y_pred,
                                                         training=True))
    loss.backward()
    trainable = model.trainable_weights[:]
    gradients = [v.value.grad for v in trainable]
    with torch.no_grad():
        model.optimizer.apply(gradients, trainable)
    return ([keras.ops.convert_to_numpy(g) for g in gradients],
            [keras.ops.convert_to_numpy(w.value) for w in model.weights])
