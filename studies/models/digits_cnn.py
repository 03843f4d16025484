"""A user model for scikit-learn's 8x8 digits (`studies/digits.yaml`): two small conv layers and a dense head.

Every random piece takes its seed from `seeds`, so `seeds.fresh` decides what changes between replicates.
"""

import keras
from keras import layers


def build(input_shape, n_classes, args, seeds):
    width = args.get("width", 16)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=seeds.initializer())(inputs)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=seeds.initializer())(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(args.get("dropout", 0.2), seed=seeds.dropout())(x)
    outputs = layers.Dense(n_classes, kernel_initializer=seeds.initializer("glorot_uniform"))(x)
    return keras.Model(inputs, outputs, name="digits_cnn")
