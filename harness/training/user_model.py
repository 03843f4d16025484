"""The user's Keras model: load the builder, hand it seeds by source, feed it images and declared side inputs.

`builder(input_shape, n_classes, args, seeds)` returns a Keras 3 model. `seeds.init()`, `seeds.dropout()` and
`seeds.augment()` give a new integer seed per call, derived from the run's seed for that source, so `seeds.fresh`
means for a user model what it means for the built-in CNN. A model with several inputs gets the images as its
input named `image` and each other input from the side input of the same name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.errors import SpecError

IMAGE_INPUT = "image"


class Seeds:
    """Per-source seeds for one build: each call returns the next independent seed of that source."""

    def __init__(self, seeds: dict[str, int]) -> None:
        self.values = dict(seeds)
        self._drawn: dict[str, int] = {}

    def __getitem__(self, source: str) -> int:
        return self.values[source]

    def _next(self, source: str) -> int:
        count = self._drawn.get(source, 0)
        self._drawn[source] = count + 1
        return int(np.random.SeedSequence([self.values[source], count]).generate_state(1)[0] >> 1)

    def init(self) -> int:
        return self._next("init")

    def dropout(self) -> int:
        return self._next("dropout")

    def augment(self) -> int:
        return self._next("augment")

    def initializer(self, name: str = "he_uniform") -> Any:
        """A Keras initializer (`he_uniform`, `glorot_uniform`, ...) seeded from the init source."""
        import keras

        return type(keras.initializers.get(name))(seed=self.init())


def load_builder(ref: str) -> Callable[..., Any]:
    """The builder function; a SpecError naming it when its file or module fails to import."""
    target, function = ref.rsplit(":", 1)
    where = f"model.builder {ref}"
    try:
        if target.endswith(".py"):
            name = "harness_builder_" + hashlib.sha256(target.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, target)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SystemExit as err:  # an exit while importing: the check would end with the builder's own status
        raise SpecError(f"{where}: cannot import: the file calls exit({err.code!r}); allowed: a module that "
                        "defines the builder") from None
    except Exception as err:  # the user's file: any error while importing it is bad input
        raise SpecError(f"{where}: cannot import: {type(err).__name__}: {first_line(err)}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        defined = ", ".join(n for n in sorted(vars(module)) if callable(vars(module)[n]) and not n.startswith("_"))
        raise SpecError(f"{where}: no function '{function}' in {target}; defined: {defined or 'none'}")
    return builder


def build_user_model(config: Any, input_shape: tuple[int, ...], n_classes: int, seeds: dict[str, int]) -> Any:
    """Call the builder; a SpecError (one line) when it raises, exits or returns something that is not a Keras
    model. Keras is imported only after the builder returns (its file imports it anyway), so a check answers a
    failing builder in the time of its own imports and build."""
    builder = load_builder(config.builder)
    where = f"model.builder {config.builder}"
    try:
        model = builder(tuple(input_shape), n_classes, dict(config.args), Seeds(seeds))
    except SystemExit as err:  # sys.exit() in a builder must not end the command with the builder's status
        raise SpecError(f"{where}: calls exit({err.code!r}) instead of returning a model; allowed: return a "
                        "keras.Model, or raise an exception") from None
    except Exception as err:
        raise SpecError(f"{where}: failed: {type(err).__name__}: {first_line(err)}") from None
    if "keras" not in sys.modules or not isinstance(model, sys.modules["keras"].Model):
        raise SpecError(f"{where}: returned {type(model).__name__}; allowed: a Keras 3 model (keras.Model)")
    return model


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def input_names(model: Any) -> list[str]:
    try:
        return [tensor.name for tensor in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model not yet called: one (image) input
        return [IMAGE_INPUT]


def check_inputs(model: Any, side_names: list[str], ref: str) -> None:
    names = input_names(model)
    if len(names) > 1 and IMAGE_INPUT not in names:
        raise SpecError(f"model.builder {ref}: inputs {names}; a model with several inputs needs one named "
                        f"'{IMAGE_INPUT}' for the images")
    for name in names:
        if len(names) > 1 and name != IMAGE_INPUT and name not in side_names:
            raise SpecError(f"model.builder {ref}: input '{name}' is not a side input of this data; allowed: "
                            f"{IMAGE_INPUT}, {', '.join(side_names) or '(no side inputs)'}")


def model_inputs(model: Any, images: np.ndarray, side: dict[str, np.ndarray]) -> Any:
    """What `fit`/`predict` get: the images (N, S, S, C) alone, or a dict by input name with the side inputs."""
    images = images[..., None] if images.ndim == 3 else images
    names = input_names(model)
    if len(names) == 1:
        return images
    return {name: images if name == IMAGE_INPUT else side[name] for name in names}


def quiet_stderr() -> None:
    """A checking child's initializer: the backends' C++ start-up noise must not break the parent's one-line error
    (the check's result, errors and warnings included, comes back through the pool)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def check_builders(models: list[Any], input_shape: tuple[int, ...], n_classes: int, side_names: list[str],
                   seeds: dict[str, int]) -> list[str]:
    """Build each distinct user model (in a child process, before anything is stored): returns warnings.

    Raises SpecError for a builder that fails. Builds each model twice with the same seeds: different weights
    mean the builder ignores `seeds`, so its runs cannot be repeated bit for bit.
    """
    warnings = []
    for config in models:
        first = build_user_model(config, input_shape, n_classes, seeds)
        check_inputs(first, side_names, config.builder)
        check_shapes(first, input_shape, n_classes, config.builder)
        second = build_user_model(config, input_shape, n_classes, seeds)
        output_shape(second, input_shape, config.builder)  # builds a model defined without an Input, as the first
        if any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True)):
            warnings.append(f"warning: model.builder {config.builder}: two builds with the same seeds differ; pass "
                            "seeds.initializer()/seeds.dropout() to its layers, or its runs will not repeat")
    return warnings


def check_shapes(model: Any, input_shape: tuple[int, ...], n_classes: int, ref: str) -> None:
    """The model must take the images as training feeds them and answer one logit per class per image.

    Keras accepts a model that ignores `input_shape` or keeps the spatial axes, and training then fails on the
    first batch, after the store has a FAILED run: both are refused here, before anything trains."""
    image = image_input_shape(model)
    if image is not None and not takes(image, input_shape):
        raise SpecError(f"model.builder {ref}: its image input takes {shape_text(image)} but the images are "
                        f"{shape_text((None, *input_shape))}; allowed: an input of shape `input_shape`, the "
                        "builder's first argument")
    output = output_shape(model, input_shape, ref)
    if len(output) != 2:
        raise SpecError(f"model.builder {ref}: outputs {shape_text(output)}; allowed: {shape_text((None, n_classes))}"
                        ", one logit per class for each image (flatten or pool before the last layer)")
    if output[-1] != n_classes:
        raise SpecError(f"model.builder {ref}: outputs {output[-1]} values per image; the data has {n_classes} "
                        f"classes, so allowed: {n_classes} logits")


def takes(image: tuple[Any, ...], input_shape: tuple[int, ...]) -> bool:
    """Whether an input of shape `image` (batch axis first) takes these images; None matches any size. Keras adds or
    drops a trailing axis of 1, so a grayscale model may take (S, S) as well as (S, S, 1)."""
    allowed = [tuple(input_shape), *([tuple(input_shape[:-1])] if input_shape[-1] == 1 else [])]
    return any(len(image) == len(shape) + 1 and all(a is None or a == b for a, b in zip(image[1:], shape, strict=True))
               for shape in allowed)


def image_input_shape(model: Any) -> tuple[Any, ...] | None:
    """The shape of the input that gets the images, or None for a model not yet built (no inputs yet)."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        return None
    named = [tensor for tensor in inputs if tensor.name == IMAGE_INPUT]
    image = named[0] if named else inputs[0] if len(inputs) == 1 else None
    return None if image is None else tuple(image.shape)


def output_shape(model: Any, input_shape: tuple[int, ...], ref: str) -> tuple[Any, ...]:
    """The first output's shape: declared by a functional model, else from calling the model on a zero batch."""
    try:
        return tuple(model.outputs[0].shape)
    except (AttributeError, ValueError, IndexError, TypeError):
        pass
    try:
        output = model(np.zeros((1, *input_shape), np.float32))
    except Exception as err:
        raise SpecError(f"model.builder {ref}: fails on a batch of shape {shape_text((1, *input_shape))}: "
                        f"{type(err).__name__}: {first_line(err)}") from None
    output = output[0] if isinstance(output, list | tuple) else output
    return (None, *tuple(output.shape)[1:])


def shape_text(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("None" if size is None else str(int(size)) for size in shape) + ")"
