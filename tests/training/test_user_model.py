"""User models in training: seeds by source, a side input fed by name, and builders refused in one line."""

from __future__ import annotations

from functools import partial

import pytest

from harness.errors import SpecError
from harness.study.design import plan_runs
from harness.study.spec import parse_spec
from harness.training.sources import load_study_data
from harness.training.train import train_run
from harness.training.user_model import Seeds, check_builders

BUILDERS = '''
import keras
from keras import layers


def with_letter(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    letter = keras.Input(shape=(1,), name="letter", dtype="int32")
    x = layers.Flatten()(layers.Conv2D(args["width"], 3, strides=4, kernel_initializer=seeds.initializer())(image))
    x = layers.Dropout(0.2, seed=seeds.dropout())(x)
    code = layers.Flatten()(layers.Embedding(26, 2, embeddings_initializer=seeds.initializer("uniform"))(letter))
    return keras.Model([image, letter], layers.Dense(n_classes, kernel_initializer=seeds.initializer())(
        layers.Concatenate()([x, code])))


def unseeded(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    return keras.Model(image, layers.Dense(n_classes)(layers.Flatten()(image)))


def asks_for_colour(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    colour = keras.Input(shape=(1,), name="colour")
    x = layers.Concatenate()([layers.Flatten()(image), colour])
    return keras.Model([image, colour], layers.Dense(n_classes)(x))


def three_outputs(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    return keras.Model(image, layers.Dense(3)(layers.Flatten()(image)))


def returns_none(input_shape, n_classes, args, seeds):
    return None


def raises(input_shape, n_classes, args, seeds):
    return {}["width"]


def per_pixel(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    return keras.Model(image, layers.Conv2D(n_classes, 3, padding="same")(image))


def fixed_size(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=(16, 16, 1), name="image")
    return keras.Model(image, layers.Dense(n_classes)(layers.Flatten()(image)))


def no_channel_axis(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape[:2], name="image")  # Keras adds the grayscale axis of 1 itself
    return keras.Model(image, layers.Dense(n_classes, kernel_initializer=seeds.initializer())(layers.Flatten()(image)))


def sequential_per_pixel(input_shape, n_classes, args, seeds):
    return keras.Sequential([layers.Conv2D(n_classes, 3, padding="same")])


def exits(input_shape, n_classes, args, seeds):
    raise SystemExit(3)
'''
SPEC = """
name: side
repeats: 1
data: {source: synthetic, n: 120, seed: 2}
base:
  model: {builder: nets.py:with_letter, args: {width: 4}}
  seeds: {fresh: []}
  training: {batch_size: 32}
  stages: {train: {pipeline: [], epochs: 1}}
"""


@pytest.fixture
def nets(tmp_path):
    (tmp_path / "nets.py").write_text(BUILDERS)
    return tmp_path


def config(folder, name: str):
    return parse_spec(SPEC.replace("with_letter", name), folder / "s.yaml").base.model


def test_seeds_hand_out_a_new_seed_per_call_and_source():
    seeds = Seeds({"init": 1, "dropout": 1, "augment": 2})
    drawn = [seeds.init(), seeds.init(), seeds.dropout()]
    assert drawn[0] != drawn[1] and drawn[0] == drawn[2]  # same base value, same stream, but a separate counter
    assert Seeds({"init": 1}).init() == drawn[0] and Seeds({"init": 3}).init() != drawn[0] and seeds["augment"] == 2


def test_a_builder_with_a_side_input_trains_on_the_letter(nets, tmp_path):
    spec = parse_spec(SPEC, nets / "s.yaml")
    data = load_study_data(spec.data)
    (run,) = plan_runs(spec, data.fingerprint)
    images_for = partial(data.images_for, cache_dir=tmp_path / "cache")
    result = train_run(run, data.ids, data.digits, images_for, keep_model=True, side=data.side,
                       n_classes=data.n_classes)
    assert result.status == "FINISHED", result.failure_reason
    assert [t.name for t in result.model.inputs] == ["image", "letter"]
    again = train_run(run, data.ids, data.digits, images_for, side=data.side, n_classes=data.n_classes)
    assert again.weights_hash == result.weights_hash
    no_letter = train_run(run, data.ids, data.digits, images_for, n_classes=data.n_classes)
    assert no_letter.status == "FAILED" and "letter" in no_letter.failure_reason


def test_check_builds_each_model_and_warns_when_seeds_are_ignored(nets):
    seeds = {"init": 0, "dropout": 0, "augment": 0}
    assert check_builders([config(nets, "with_letter")], (28, 28, 1), 10, ["letter"], seeds) == []
    assert check_builders([config(nets, "no_channel_axis")], (28, 28, 1), 10, [], seeds) == []
    (warning,) = check_builders([config(nets, "unseeded")], (28, 28, 1), 10, [], seeds)
    assert warning.startswith("warning: model.builder") and "differ" in warning


@pytest.mark.parametrize(
    "name, expected",
    [
        ("asks_for_colour", "input 'colour' is not a side input of this data; allowed: image, letter"),
        ("three_outputs", "outputs 3 values per image; the data has 10 classes"),
        ("returns_none", "returned NoneType; allowed: a Keras 3 model"),
        ("raises", "failed: KeyError: 'width'"),
        # Keras accepts these two; training failed on the first batch, leaving a FAILED run in the store
        ("per_pixel", "outputs (None, 28, 28, 10); allowed: (None, 10), one logit per class for each image"),
        ("fixed_size", "its image input takes (None, 16, 16, 1) but the images are (None, 28, 28, 1); allowed: an "
                       "input of shape `input_shape`"),
        ("sequential_per_pixel", "outputs (None, 28, 28, 10); allowed: (None, 10)"),
        ("exits", "calls exit(3) instead of returning a model"),  # was the command's exit status 3, no message
        ("missing_function", "no function 'missing_function' in"),
    ],
)
def test_bad_builders_are_one_line_errors(nets, name, expected):
    with pytest.raises(SpecError, match="^[^\n]*$") as caught:
        check_builders([config(nets, name)], (28, 28, 1), 10, ["letter"], {"init": 0, "dropout": 0, "augment": 0})
    assert expected in str(caught.value)


def test_a_builder_file_that_fails_to_import(nets):
    (nets / "nets.py").write_text("import no_such_module_for_harness\n")
    with pytest.raises(SpecError, match="cannot import: ModuleNotFoundError: No module named 'no_such_module"):
        check_builders([config(nets, "with_letter")], (28, 28, 1), 10, [], {"init": 0, "dropout": 0, "augment": 0})
