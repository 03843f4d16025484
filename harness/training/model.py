"""The CNN every run trains: a small configurable Keras 3 convnet.

Every random piece gets its own explicit seed, split by source: kernel initializers from the init seed,
dropout masks from the dropout seed, augmentation from the augment seed. Nothing relies on the global RNG,
so changing one source changes only that source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.study.spec import AugmentationConfig, ModelConfig

N_CLASSES = 10


def _sub_seeds(seed: int, count: int) -> list[int]:
    """Independent per-layer seeds: Keras warns (and repeats values) when one seeded initializer is reused."""
    return [int(s >> 1) for s in np.random.SeedSequence(seed).generate_state(count)]


def build_cnn(
    image_size: int,
    model: ModelConfig,
    augmentation: AugmentationConfig,
    seeds: dict[str, int],
    channels: int = 1,
    n_classes: int = N_CLASSES,
) -> Any:
    import keras
    from keras import layers

    n_weighted = 2 * model.depth + 2
    init_seeds = iter(_sub_seeds(seeds["init"], n_weighted))
    dropout_seeds = iter(_sub_seeds(seeds["dropout"], 2))
    augment_seeds = iter(_sub_seeds(seeds["augment"], 3))

    def kernel_init() -> Any:
        return keras.initializers.HeUniform(seed=next(init_seeds))

    inputs = keras.Input(shape=(image_size, image_size, channels), name="image")
    x = inputs
    if augmentation.enabled:
        x = layers.RandomRotation(augmentation.rotation, fill_mode="constant", seed=next(augment_seeds))(x)
        shift = augmentation.translation
        x = layers.RandomTranslation(shift, shift, fill_mode="constant", seed=next(augment_seeds))(x)
        x = layers.RandomZoom(augmentation.zoom, fill_mode="constant", seed=next(augment_seeds))(x)
    for block in range(model.depth):
        filters = model.filters * 2**block
        for _ in range(2):
            x = layers.Conv2D(
                filters,
                model.kernel_size,
                padding="same",
                use_bias=not model.batch_norm,
                kernel_initializer=kernel_init(),
            )(x)
            if model.batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x) if model.head == "global_pool" else layers.Flatten()(x)
    x = layers.Dropout(model.dropout, seed=next(dropout_seeds))(x)
    x = layers.Dense(model.dense_units, activation="relu", kernel_initializer=kernel_init())(x)
    x = layers.Dropout(model.dropout, seed=next(dropout_seeds))(x)
    outputs = layers.Dense(n_classes, kernel_initializer=kernel_init(), name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="hidden_digit_cnn")
