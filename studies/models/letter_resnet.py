"""A small residual network that also sees the contest's `letter` (the letter drawn behind the digit).

The model declares a second input named `letter`; the harness feeds it the row's letter as an integer 0..25
(shape (N, 1)), embedded here and joined with the image features before the classifier.

Two options follow how the contest's images are made; both are off by default:
- `digit_level` (e.g. 0.55): a **digit channel**. The digit shows only where it crosses the letter, where values
  rise above the letter's gray (~128 of 255). `ReLU(threshold=digit_level)` keeps those pixels and zeroes the
  rest: a second channel that holds the digit alone, beside the raw image. It needs the raw image scaled to
  [0, 1] (an empty pipeline): stretching or binarizing moves the letter's gray with it.
- `shift` (e.g. 2): **augmentation that keeps strokes sharp**, integer-pixel shifts of at most `shift` px with
  nearest-neighbour sampling, on the raw image before anything interpolates. Rotation and zoom with bilinear
  sampling blur the digit's bright strokes into the letter's gray (−15 pp in the second search).

Two regularizers, also off by default, because 1,230 training images are memorized within 50 epochs (training
accuracy 1.00 while validation sits near 0.78, docs/findings.md):
- `l2` (e.g. 5e-4): weight decay on every convolution's kernel, as a Keras L2 penalty added to the loss.
- `erase` (e.g. 0.5): random erasing while training: with a probability drawn up to `erase`, a rectangle of
  2-20% of the image is set to 0 (`keras.layers.RandomErasing`, seeded from `seeds.augment()`), so no single
  stroke fragment decides the digit.
"""

import keras
from keras import layers


def _conv(filters, size, seeds, l2, stride=1, use_bias=False):
    decay = keras.regularizers.L2(l2) if l2 else None
    return layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=use_bias,
                         kernel_initializer=seeds.initializer(), kernel_regularizer=decay)


def _residual(x, filters, stride, seeds, l2):
    shortcut = x
    y = _conv(filters, 3, seeds, l2, stride)(x)
    y = layers.Activation("relu")(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(_conv(filters, 3, seeds, l2)(y))
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = _conv(filters, 1, seeds, l2, stride)(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def _inputs(image, args, seeds):
    """The image as the network sees it: shifted while training, with the digit channel beside it."""
    x = image
    if args.get("shift"):
        factor = args["shift"] / image.shape[1]
        x = layers.RandomTranslation(factor, factor, fill_mode="constant", interpolation="nearest",
                                     seed=seeds.augment())(x)
    if args.get("erase"):
        x = layers.RandomErasing(factor=args["erase"], scale=(0.02, 0.2), fill_value=0.0, value_range=(0, 1),
                                 seed=seeds.augment())(x)
    if args.get("digit_level"):
        x = layers.Concatenate()([x, layers.ReLU(threshold=args["digit_level"])(x)])
    return x


def build(input_shape, n_classes, args, seeds):
    width = args.get("width", 32)
    image = keras.Input(shape=input_shape, name="image")
    letter = keras.Input(shape=(1,), name="letter", dtype="int32")
    l2 = args.get("l2", 0.0)
    x = _conv(width, 3, seeds, l2, use_bias=True)(_inputs(image, args, seeds))
    for block in range(args.get("blocks", 3)):
        x = _residual(x, width * 2 ** min(block, 2), 1 if block == 0 else 2, seeds, l2)
    x = layers.GlobalAveragePooling2D()(x)
    code = layers.Flatten()(layers.Embedding(26, args.get("letter_dim", 8),
                                             embeddings_initializer=seeds.initializer("uniform"))(letter))
    x = layers.Concatenate()([x, code])
    x = layers.Dropout(args.get("dropout", 0.2), seed=seeds.dropout())(x)
    outputs = layers.Dense(n_classes, kernel_initializer=seeds.initializer("glorot_uniform"))(x)
    return keras.Model([image, letter], outputs, name="letter_resnet")
