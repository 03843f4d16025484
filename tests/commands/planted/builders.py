"""Builders with planted nondeterminism for `harness explain`'s divergence locator (tests/commands/test_trace.py).

Each is digits_cnn.py's model with one random piece seeded from the operating system instead of `seeds`, so two
runs of one config part at a known step, layer and kind.
"""

import os

import keras
from keras import layers


def _os_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") >> 1


def _model(inputs, x, n_classes, seeds, head_seed):
    x = layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=seeds.initializer())(x)
    x = layers.Flatten()(x)
    init = keras.initializers.GlorotUniform(seed=head_seed)
    return keras.Model(inputs, layers.Dense(n_classes, kernel_initializer=init, name="head")(x))


def head_from_os(input_shape, n_classes, args, seeds):
    """The output layer `head` takes its initializer's seed from os.urandom: the runs part at step 0."""
    inputs = keras.Input(shape=input_shape, name="image")
    return _model(inputs, inputs, n_classes, seeds, _os_seed())


def jitter_from_os(input_shape, n_classes, args, seeds):
    """The augmentation layer `jitter` takes its seed from os.urandom: same weights, the first step parts."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.RandomTranslation(0.2, 0.2, fill_mode="constant", seed=_os_seed(), name="jitter")(inputs)
    return _model(inputs, x, n_classes, seeds, seeds.init())


def clean(input_shape, n_classes, args, seeds):
    """Every random piece from `seeds`: two runs of one config are bit-identical."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.RandomTranslation(0.2, 0.2, fill_mode="constant", seed=seeds.augment(), name="jitter")(inputs)
    return _model(inputs, x, n_classes, seeds, seeds.init())
