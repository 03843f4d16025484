"""predict's members trained side by side in spawned processes are the members trained one after another here:
the same weights, in member order, including a user model whose file the spawned process imports."""

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from harness.commands.predict import Chosen, ensemble_members
from harness.execution.members import train_members
from harness.study.spec import parse_spec
from harness.training import determinism
from harness.training.sources import load_study_data
from harness.training.train import weights_hash

SPEC = """
name: members
data: {source: synthetic, n: 120, seed: 1}
base:
  model: {builder: net.py:build}
  training: {batch_size: 32}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 1}}
"""
NET = '''
import keras
from keras import layers


def build(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    x = layers.Dropout(0.2, seed=seeds.dropout())(layers.Flatten()(image))
    return keras.Model(image, layers.Dense(n_classes, kernel_initializer=seeds.initializer())(x))
'''


def _hashes_in_turn(members, data) -> list[str]:
    """In a fresh process, as `predict --workers 1` trains: the backend configured for the members, then each."""
    determinism.configure_process(members[0].config.determinism)
    return [weights_hash(m) for m in train_members(members, data, 1, load_study_data(data))]


def test_members_trained_side_by_side_are_the_members_trained_in_turn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preprocessing cache of spawned members goes under here
    (tmp_path / "net.py").write_text(NET)
    spec = parse_spec(SPEC, tmp_path / "members.yaml")
    train = load_study_data(spec.data)
    members = ensemble_members(Chosen(spec, spec.base, "test", None), 3, train.fingerprint)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        in_turn = pool.submit(_hashes_in_turn, members, spec.data).result()
    side_by_side = [weights_hash(m) for m in train_members(members, spec.data, 2, train)]
    assert side_by_side == in_turn and len(set(in_turn)) == 3  # same members, in order, each its own seeds
