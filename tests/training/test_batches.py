"""The TensorFlow input pipeline feeds a model exactly the batches, and so trains exactly the weights, of the
backend-neutral PyDataset it replaced."""

from functools import partial

import keras
import numpy as np

from harness.execution.prepared import prepare
from harness.study.spec import parse_spec
from harness.training import batches, train
from tests.training.test_train import SPEC


class BatchRecorder(keras.Model):
    """Records the rows (the `letter` input holds each row's index) of every batch `fit` feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.seen: list[list[int]] = []

    def call(self, x):
        return self.dense(x["image"])

    def train_step(self, data):
        x, y = data
        assert np.asarray(y).tolist() == (np.asarray(x["letter"]) % 3).tolist()  # labels stay with their rows
        self.seen.append(np.asarray(x["letter"]).tolist())
        return {"loss": 0.0}


def _fed(data, steps=None, epochs=3) -> list[list[int]]:
    model = BatchRecorder()
    model.compile(run_eagerly=True)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False)
    return model.seen


def test_tensorflow_pipeline_feeds_the_pydataset_batches_in_order():
    x = {"image": np.arange(10 * 4, dtype="float32").reshape(10, 4), "letter": np.arange(10, dtype="int32")}
    y = np.arange(10) % 3
    data, steps = batches.shuffled_batches(x, y, batch_size=4, seed=11, epochs=3)
    expected = _fed(batches._py_batches(x, y, batch_size=4, seed=11, start=0))
    assert steps == 3 and [len(b) for b in expected] == [4, 4, 2] * 3
    assert _fed(data, steps) == expected
    assert expected[0] != expected[3]  # each epoch has its own order
    # resumed after epoch 1 (training.checkpoint): the batches of epochs 2 and 3, on either path
    resumed, _ = batches.shuffled_batches(x, y, batch_size=4, seed=11, epochs=3, start=1)
    assert _fed(resumed, steps, epochs=2) == expected[3:]
    assert _fed(batches._py_batches(x, y, batch_size=4, seed=11, start=1), epochs=2) == expected[3:]


def test_either_input_path_trains_bit_identical_weights(tmp_path, monkeypatch):
    study = prepare(parse_spec(SPEC.format(schedule="cosine", smoothing=0.1), tmp_path / "s.yaml"))
    images_for = partial(study.data.images_for, cache_dir=tmp_path)

    def weights() -> str:
        result = train.train_run(study.runs[0], study.data.ids, study.data.digits, images_for)
        assert result.status == "FINISHED", result.failure_reason
        return result.weights_hash

    pipeline = weights()
    monkeypatch.setattr(train, "shuffled_batches",
                        lambda x, y, size, seed, _epochs, start: (batches._py_batches(x, y, size, seed, start), None))
    assert weights() == pipeline
