"""Test-time shifts: the views are whole-pixel shifts, the average is the views' mean softmax, and a run scored
with them keeps its training (and, at 0, the keys runs had before the option existed)."""

from functools import partial

import numpy as np
import pytest
from scipy.special import softmax

from harness.execution.prepared import prepare
from harness.study.spec import parse_spec
from harness.training.test_shifts import averaged_logits, mean_probabilities, offsets, shifted
from harness.training.train import train_run


def test_offsets_cover_the_square_once_with_the_image_itself_first():
    views = offsets(2)
    assert views[0] == (0, 0) and len(views) == 25 == len(set(views))
    assert max(max(abs(dy), abs(dx)) for dy, dx in views) == 2
    assert offsets(0) == [(0, 0)]


def test_a_shift_moves_pixels_and_fills_the_edge_with_zero():
    images = np.arange(1, 17, dtype="float32").reshape(1, 4, 4)
    down_right = shifted(images, 1, 1)
    assert down_right[0, 1:, 1:].tolist() == images[0, :3, :3].tolist()
    assert down_right[0, 0].tolist() == [0, 0, 0, 0] and down_right[0, :, 0].tolist() == [0, 0, 0, 0]
    up_left = shifted(images[..., None], -2, -1)[..., 0]  # channels ride along
    assert up_left[0, :2, :3].tolist() == images[0, 2:, 1:].tolist() and not up_left[0, 2:].any()


def test_the_average_is_the_mean_softmax_of_every_view_and_side_inputs_stay_put():
    rng = np.random.default_rng(0)
    images, letters = rng.random((5, 6, 6, 1)).astype("float32"), np.arange(5)[:, None]
    weights = rng.normal(size=(36, 3))

    def logits_of(x):  # a linear "model" of its image input; the side input must arrive unshifted
        assert x["letter"] is letters
        return x["image"].reshape(len(x["image"]), -1) @ weights

    x = {"image": images, "letter": letters}
    expected = np.mean([softmax(logits_of({"image": shifted(images, dy, dx), "letter": letters}), axis=1)
                        for dy, dx in offsets(1)], axis=0)
    assert mean_probabilities(logits_of, x, 1) == pytest.approx(expected)
    assert softmax(averaged_logits(logits_of, x, 1), axis=1) == pytest.approx(expected, rel=1e-5)
    assert averaged_logits(logits_of, x, 0) == pytest.approx(logits_of(x))  # 0: the model's own logits


SPEC = """
name: shifts
data: {{source: synthetic, n: 160, seed: 3}}
base:
  model: {{filters: 4, depth: 1, dense_units: 8}}
  training: {{batch_size: 32}}
  evaluation: {{method: holdout, test_shifts: {shifts}}}
  determinism: {{intra_op_threads: 1, inter_op_threads: 1}}
  stages: {{train: {{pipeline: [], epochs: 2}}}}
"""


def test_shifts_change_the_score_not_the_training_and_zero_keeps_the_old_keys(tmp_path):
    plain, shifted_study = (prepare(parse_spec(SPEC.format(shifts=n), tmp_path / f"{n}.yaml")) for n in (0, 1))
    no_option = prepare(parse_spec(SPEC.format(shifts=0).replace(", test_shifts: 0", ""), tmp_path / "x.yaml"))
    assert plain.runs[0].run_key == no_option.runs[0].run_key  # runs logged before the option are reused
    assert shifted_study.runs[0].run_key != plain.runs[0].run_key  # another score is another run
    results = [train_run(study.runs[0], study.data.ids, study.data.digits,
                         partial(study.data.images_for, cache_dir=tmp_path)) for study in (plain, shifted_study)]
    assert all(r.status == "FINISHED" for r in results)
    assert results[0].weights_hash == results[1].weights_hash  # the same training
    assert results[0].predictions["id"].tolist() == results[1].predictions["id"].tolist()
    assert results[1].loss != pytest.approx(results[0].loss)  # scored over the 9 views, not the image alone
    for result in results:  # each run logs its softmax beside the label, for the report's seed ensemble
        probabilities = result.predictions[[f"p{c}" for c in range(10)]].to_numpy()
        assert probabilities.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
        assert (probabilities.argmax(axis=1) == result.predictions["pred"]).all()
    assert not np.allclose(results[0].predictions["p0"], results[1].predictions["p0"])
