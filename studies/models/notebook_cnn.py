"""The notebook's CNN for 84-px contest images (`upscale x3`), rewritten as a harness builder.

Three conv blocks (32, 64, 128 filters by default, `args.width` scales them), batch norm, dropout, a dense head.
Every initializer and dropout layer takes a seed from `seeds`, so the study's `seeds.fresh` applies.

Batch norm's moving averages use momentum 0.9 (`args.bn_momentum`), not Keras' 0.99: with 1,230 training images
(39 batches an epoch) the 0.99 averages still describe the initial weights after 8 epochs, and validation sat
at chance (0.11) while training accuracy rose to 0.64; with 0.9 the same run validated at 0.70 (28 px, measured).
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
            x = layers.BatchNormalization(momentum=args.get("bn_momentum", 0.9))(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout / 2, seed=seeds.dropout())(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(args.get("dense", 128), activation="relu", kernel_initializer=seeds.initializer())(x)
    x = layers.Dropout(dropout, seed=seeds.dropout())(x)
    outputs = layers.Dense(n_classes, kernel_initializer=seeds.initializer("glorot_uniform"))(x)
    return keras.Model(inputs, outputs, name="notebook_cnn")
