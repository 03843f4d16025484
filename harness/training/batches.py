"""Training batches in an order that depends only on (data-order seed, epoch), on any Keras backend.

The order is a numpy permutation per epoch, not the backend's shuffle: TensorFlow mixes its global seed into op
seeds, and jax/torch runs may not have TensorFlow at all.

On TensorFlow the batches come from a tf.data pipeline that gathers rows of in-memory tensors. A Keras
`PyDataset` yields the same batches but goes through `tf.data.Dataset.from_generator`, and in a worker process
that path page-faulted fresh memory on every step: 7 M minor faults for a 3-epoch letter-ResNet training
against 0.6-0.8 M, and 2.45x the training time (benchmarks/README.md, `bench_versus.py`). Other backends keep
the `PyDataset`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Keras advances a PyDataset once (`on_epoch_end`) before its first epoch, so a stage's first epoch has always
# trained on permutation 1; the pipeline starts there too, and runs logged before it keep their weights.
FIRST_ORDER = 1


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The rows of one epoch in training order."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def take_rows(x: Any, rows: np.ndarray) -> Any:
    """Rows of a model's input: an array, or a dict of arrays (images and side inputs)."""
    return {name: array[rows] for name, array in x.items()} if isinstance(x, dict) else x[rows]


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)


def step_rows(n_rows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The rows of a stage's `step`-th batch (0-based, counted across its epochs) as `shuffled_batches` yields
    them: epoch e of a stage trains on permutation FIRST_ORDER + e (harness.training.replay rebuilds a step)."""
    epoch, index = divmod(step, steps_per_epoch(n_rows, batch_size))
    return epoch_order(n_rows, seed, FIRST_ORDER + epoch)[index * batch_size : (index + 1) * batch_size]


def shuffled_batches(x: Any, y: np.ndarray, batch_size: int, seed: int, epochs: int,
                     start: int = 0) -> tuple[Any, int | None]:
    """`fit`'s training data for epochs `start`..`epochs` - 1 of a stage (`start` > 0: resumed from a checkpoint)
    and the steps per epoch to pass with it (None: Keras counts).

    `x` is an array or a dict of arrays (images and side inputs), row-aligned with `y`.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return _tf_batches(x, y, batch_size, seed, epochs, start), steps_per_epoch(len(y), batch_size)
    return _py_batches(x, y, batch_size, seed, start), None


def _tf_batches(x: Any, y: np.ndarray, batch_size: int, seed: int, epochs: int, start: int) -> Any:
    """Every epoch's batches in one finite dataset; with `steps_per_epoch`, Keras keeps one iterator over it."""
    import tensorflow as tf

    rows, labels = tf.nest.map_structure(tf.constant, x), tf.constant(y)
    orders = [tf.data.Dataset.from_tensor_slices(epoch_order(len(y), seed, epoch)).batch(batch_size)
              for epoch in range(FIRST_ORDER + start, FIRST_ORDER + epochs)]
    indices = orders[0]
    for order in orders[1:]:
        indices = indices.concatenate(order)

    def gather(index: Any) -> tuple[Any, Any]:
        return tf.nest.map_structure(lambda a: tf.gather(a, index), rows), tf.gather(labels, index)

    # No autotuning: the pipeline has nothing to tune (a sequential map, a fixed prefetch), and the autotune
    # model's thread made the iterator's teardown at the end of `fit` wait 3-4 s with the CPU idle in about half
    # the trainings of two workers side by side (measured: 0.0 s in 8 of 8 without it, same weights).
    options = tf.data.Options()
    options.autotune.enabled = False
    return indices.map(gather).prefetch(2).with_options(options)


def _py_batches(x: Any, y: np.ndarray, batch_size: int, seed: int, start: int) -> Any:
    import keras

    class ShuffledBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = start
            self.order = epoch_order(len(y), seed, self.epoch)

        def __len__(self) -> int:
            return steps_per_epoch(len(y), batch_size)

        def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            return take_rows(x, rows), y[rows]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = epoch_order(len(y), seed, self.epoch)

    return ShuffledBatches()
