"""A training cut short after a checkpoint resumes from it and ends exactly where the uninterrupted training ends:
same weights hash, same per-epoch losses, same plateau stop. The crash here is a MemoryError right after the k-th
checkpoint is written (the run is then kept for a retry, as an out-of-memory run is); tests/execution/test_crash.py
kills a real worker process at a checkpoint."""

import json
from functools import partial

import numpy as np
import pytest

from harness.execution.prepared import prepare
from harness.study.spec import parse_spec
from harness.training import checkpoint
from harness.training.checkpoint import Checkpoints, Position
from harness.training.train import train_run

# dropout and augmentation (seed states), batch norm (moving statistics), a cosine schedule (the step counter), a
# stage ending on its plateau and a stage after it
SPEC = """
name: resume
data: {source: digits}
base:
  model: {filters: 4, depth: 1, dense_units: 16, dropout: 0.3, batch_norm: true}
  augmentation: {enabled: true}
  training: {batch_size: 64, learning_rate: 0.01, schedule: cosine}
  stages:
    first: {pipeline: [], epochs: {until: plateau, max: 12, patience: 1, min_delta: 0.02}}
    then: {pipeline: [stretch], epochs: 2}
  stage_order: [first, then]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    study = prepare(parse_spec(SPEC, folder / "s.yaml"))
    return study, partial(study.data.images_for, cache_dir=folder)


@pytest.fixture(scope="module")
def uninterrupted(study):
    (study, images_for), run = study, study[0].runs[0]
    result = train_run(run, study.data.ids, study.data.digits, images_for)
    assert result.status == "FINISHED", result.failure_reason
    return result


def crash_after_saving(monkeypatch, epochs: int) -> None:
    """Checkpoints.save writes its file, and the one after epoch `epochs` then raises MemoryError, as a crash
    right after a checkpoint would land."""
    real_save = Checkpoints.save

    def save(self, model, history, position):
        real_save(self, model, history, position)
        if len(history) == epochs:
            raise MemoryError("crash after a checkpoint")

    monkeypatch.setattr(Checkpoints, "save", save)


def test_a_training_resumed_at_each_kind_of_point_ends_bit_identical_to_an_uninterrupted_one(
        study, uninterrupted, tmp_path, monkeypatch):
    """One training crashed three times: inside its plateau stage, at that stage's end (the next attempt must skip
    it), and inside the last stage; each attempt resumes from the checkpoint the previous one left."""
    (study, images_for), run = study, study[0].runs[0]
    first = sum(row["stage"] == "first" for row in uninterrupted.history)
    assert 2 <= first < 12, "the first stage should stop on its plateau"
    monkeypatch.setenv(checkpoint.EVERY_S_ENV, "0")  # a checkpoint after every epoch
    train = partial(train_run, run, study.data.ids, study.data.digits, images_for, checkpoints=tmp_path)

    for crash_at in (1, first, first + 1):
        with monkeypatch.context() as crashing:
            crash_after_saving(crashing, crash_at)
            crashed = train()
        assert crashed.status == "FAILED" and crashed.out_of_memory  # kept for a retry, with its checkpoint
        assert len(list(tmp_path.glob("*.npz"))) == 1

    resumed = train()
    assert resumed.status == "FINISHED", resumed.failure_reason
    assert resumed.resumed == f"after epoch {first + 1}"
    assert len(resumed.history) == len(uninterrupted.history)
    for key in ("epoch", "stage", "loss", "accuracy", "val_loss"):
        assert [row[key] for row in resumed.history] == [row[key] for row in uninterrupted.history], key
    assert resumed.stopped == uninterrupted.stopped
    assert resumed.weights_hash == uninterrupted.weights_hash
    assert resumed.accuracy == uninterrupted.accuracy
    # its last checkpoint stays until the caller has stored the result: a crash while logging it trains nothing
    again = train()
    assert (again.resumed, again.weights_hash) == (f"after epoch {len(uninterrupted.history)}", resumed.weights_hash)
    checkpoint.discard(tmp_path, run.run_key)
    assert list(tmp_path.glob("*.npz")) == []
    # its wall time counts the epochs the earlier attempts kept, not only the last attempt's
    assert resumed.wall_time_s >= sum(row["epoch_time_s"] for row in resumed.history)


def test_a_checkpoint_that_does_not_fit_is_ignored_and_the_run_starts_over(study, uninterrupted, tmp_path,
                                                                           monkeypatch):
    """A torn or foreign file (another harness version, another model) is never loaded into the model."""
    (study, images_for), run = study, study[0].runs[0]
    path = tmp_path / f"{run.run_key}.npz"
    path.write_bytes(b"not a checkpoint")
    result = train_run(run, study.data.ids, study.data.digits, images_for, checkpoints=tmp_path)
    assert (result.resumed, result.weights_hash) == ("", uninterrupted.weights_hash)

    meta = {"format": checkpoint.FORMAT, "run_key": run.run_key, "position": {}, "history": []}
    np.savez(path, meta=np.array(json.dumps(meta)), model_0=np.zeros(3))  # the right key, the wrong shapes
    result = train_run(run, study.data.ids, study.data.digits, images_for, checkpoints=tmp_path)
    assert (result.resumed, result.weights_hash) == ("", uninterrupted.weights_hash)


def test_a_checkpoint_holds_every_variable_and_is_due_every_s_seconds(tmp_path):
    class Model:  # what `save` reads of a Keras model
        variables = [np.ones((2, 2), np.float32)]

        class optimizer:  # noqa: N801 -- Keras's attribute name
            variables = [np.zeros(1, np.int64)]

    saver = Checkpoints(tmp_path, "k", every_s=3600)
    assert not saver.due()
    saver.save(Model(), [{"epoch": 1, "stage": "a", "loss": 1.0}], Position(0, 1, True))
    with np.load(tmp_path / "k.npz") as saved:
        assert saved["model_0"].tolist() == [[1, 1], [1, 1]] and saved["optimizer_0"].dtype == np.int64
    assert Checkpoints(tmp_path, "k", every_s=0).due()
