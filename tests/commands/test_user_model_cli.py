"""End to end with the user's model and data: bad builders refused before anything is stored, and the README's
digits example (a class folder) giving the same weights in two fresh processes. `run` over `model.args` as a
factor: tests/commands/test_sequential_run.py; searching them: test_search.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import REPO

NET = '''
import keras
from keras import layers


def build(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(args["width"], 3, strides=2, activation="relu", kernel_initializer=seeds.initializer())(image)
    x = layers.Dropout(0.1, seed=seeds.dropout())(layers.Flatten()(x))
    return keras.Model(image, layers.Dense(n_classes, kernel_initializer=seeds.initializer())(x))


def nothing(input_shape, n_classes, args, seeds):
    return "a model"
'''
SPEC = """
name: {name}
repeats: 1
data: {{source: folder, path: shapes}}
base:
  model: {{builder: net.py:{function}, args: {{width: 4}}}}
  determinism: {{intra_op_threads: 1, inter_op_threads: 1}}
  evaluation: {{val_fraction: 0.35}}
  stages: {{train: {{pipeline: [], epochs: 1}}}}
"""


def write_shapes(root, per_class: int = 30) -> None:
    """Two classes a small CNN tells apart: bright squares and bright crosses on noise, 8 px."""
    rng = np.random.default_rng(0)
    for label in ("cross", "square"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            image = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            if label == "square":
                image[2:6, 2:6] = 220
            else:
                image[3:5, :] = image[:, 3:5] = 220
            cv2.imwrite(str(root / label / f"{index}.png"), image)


@pytest.fixture
def user_study(tmp_path):
    write_shapes(tmp_path / "shapes")
    (tmp_path / "net.py").write_text(NET)
    return tmp_path


@pytest.mark.slow
def test_builders_that_fail_are_refused_before_anything_is_stored(user_study, cli):
    """`run` builds the model in a fork of its process server (the other commands spawn a child: in-process tests
    in tests/test_bad_input.py, with the file that cannot import, the builder that exits or kills its process)."""
    (user_study / "bad.yaml").write_text(SPEC.format(name="bad", function="nothing"))
    done = cli("run", "bad.yaml", "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "returned str; allowed: a Keras 3 model" in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (user_study / "mlruns").exists()


@pytest.mark.slow
def test_readme_digits_example_gives_identical_weights_in_fresh_processes(tmp_path, in_process):
    assert in_process("data", "digits", "--out", "data/digits")[0] == 0
    assert len(list((tmp_path / "data/digits/7").glob("*.png"))) == 179
    shutil.copytree(REPO / "studies/models", tmp_path / "studies/models")
    text = (REPO / "studies/digits.yaml").read_text()
    assert "epochs: 3}" in text
    (tmp_path / "studies/digits.yaml").write_text(text.replace("epochs: 3}", "epochs: 1}"))
    hashes = []
    for _ in range(2):
        done = subprocess.run([sys.executable, str(REPO / "tests/train_hashes.py"), "studies/digits.yaml", "1", "0"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(json.loads(done.stdout.strip().splitlines()[-1])["hashes"])
    assert hashes[0] == hashes[1] and hashes[0][0] != hashes[0][1]


@pytest.mark.slow
def test_doctor_warns_about_a_builder_that_ignores_seeds(user_study, in_process):
    unseeded = NET + '''

def unseeded(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    return keras.Model(image, layers.Dense(n_classes)(layers.Flatten()(image)))
'''
    (user_study / "net.py").write_text(unseeded)
    (user_study / "u.yaml").write_text(SPEC.format(name="u", function="unseeded"))
    code, out, err = in_process("doctor", "--study", "u.yaml")
    assert code == 0, err[-2000:]
    assert "warning: model.builder" in out and "two builds with the same seeds differ" in out
    (user_study / "s.yaml").write_text(SPEC.format(name="s", function="build"))
    code, out, _ = in_process("doctor", "--study", "s.yaml")
    assert code == 0 and "two builds" not in out
