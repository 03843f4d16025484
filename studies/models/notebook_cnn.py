"""The notebook's CNN for 84-px contest images (`upscale x3`), rewritten as a harness builder.

Three conv blocks (32, 64, 128 filters by default, `args.width` scales them), batch norm, dropout, a dense head.
Every initializer and dropout layer takes a seed from `seeds`, so the study's `seeds.fresh` applies.
"""

import keras
from keras import layers


def build(input_shape, n_classes, args, seeds):
    width = args.get("width", 32)
    dropout = args.get("dropout", 0.3)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block in range(args.get("blocks", 3)):
        filters = width * 2**block
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=seeds.initializer())(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout / 2, seed=seeds.dropout())(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(args.get("dense", 128), activation="relu", kernel_initializer=seeds.initializer())(x)
    x = layers.Dropout(dropout, seed=seeds.dropout())(x)
    outputs = layers.Dense(n_classes, kernel_initializer=seeds.initializer("glorot_uniform"))(x)
    return keras.Model(inputs, outputs, name="notebook_cnn")
