"""A small residual network that also sees the contest's `letter` (the letter drawn behind the digit).

The model declares a second input named `letter`; the harness feeds it the row's letter as an integer 0..25
(shape (N, 1)), embedded here and joined with the image features before the classifier.

Two options follow how the contest's images are made (../shared/data/README.md); both are off by default:
- `digit_level` (e.g. 0.55): a **digit channel**. The digit shows only where it crosses the letter, where values
  rise above the letter's gray (~128 of 255). `ReLU(threshold=digit_level)` keeps those pixels and zeroes the
  rest: a second channel that holds the digit alone, beside the raw image. It needs the raw image scaled to
  [0, 1] (an empty pipeline): stretching or binarizing moves the letter's gray with it.
- `shift` (e.g. 2): **augmentation that keeps strokes sharp**, integer-pixel shifts of at most `shift` px with
  nearest-neighbour sampling, on the raw image before anything interpolates. Rotation and zoom with bilinear
  sampling blur the digit's bright strokes into the letter's gray (−15 pp in the second search).
"""

import keras
from keras import layers


def _residual(x, filters, stride, seeds):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=seeds.initializer())(x)
    y = layers.Activation("relu")(layers.BatchNormalization()(y))
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=seeds.initializer())(y)
    y = layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 kernel_initializer=seeds.initializer())(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def _inputs(image, args, seeds):
    """The image as the network sees it: shifted while training, with the digit channel beside it."""
    x = image
    if args.get("shift"):
        factor = args["shift"] / image.shape[1]
        x = layers.RandomTranslation(factor, factor, fill_mode="constant", interpolation="nearest",
                                     seed=seeds.augment())(x)
    if args.get("digit_level"):
        x = layers.Concatenate()([x, layers.ReLU(threshold=args["digit_level"])(x)])
    return x


def build(input_shape, n_classes, args, seeds):
    width = args.get("width", 32)
    image = keras.Input(shape=input_shape, name="image")
    letter = keras.Input(shape=(1,), name="letter", dtype="int32")
    x = layers.Conv2D(width, 3, padding="same", kernel_initializer=seeds.initializer())(_inputs(image, args, seeds))
    for block in range(args.get("blocks", 3)):
        x = _residual(x, width * 2 ** min(block, 2), 1 if block == 0 else 2, seeds)
    x = layers.GlobalAveragePooling2D()(x)
    code = layers.Flatten()(layers.Embedding(26, args.get("letter_dim", 8),
                                             embeddings_initializer=seeds.initializer("uniform"))(letter))
    x = layers.Concatenate()([x, code])
    x = layers.Dropout(args.get("dropout", 0.2), seed=seeds.dropout())(x)
    outputs = layers.Dense(n_classes, kernel_initializer=seeds.initializer("glorot_uniform"))(x)
    return keras.Model([image, letter], outputs, name="letter_resnet")
