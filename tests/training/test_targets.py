"""What predict reads: `--data` in the study's own kind, through the loaders training uses; refusals in one line."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from harness.errors import DataError
from harness.study.sections import DataConfig
from harness.training.sources import load_study_data
from harness.training.targets import answer, load_target, request_frame, request_target, row_format
from tests.training.test_image_files import pixel_frame, write_folder


def folder_study(tmp_path, **options):
    config = DataConfig(source="folder", path=write_folder(tmp_path / "train"), **options)
    return config, row_format(config, load_study_data(config))


def refused(path, config, form) -> str:
    with pytest.raises(DataError) as caught:
        load_target(path, config, form)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_folder_flat_or_in_subfolders_reads_like_training_with_paths_as_ids(tmp_path):
    config, form = folder_study(tmp_path, resize=6, interpolation="linear")
    train = load_study_data(config)
    target = load_target(tmp_path / "train", config, form)  # the class subfolders' names are not read
    assert target.ids.tolist() == [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)]
    assert np.array_equal(target.images, train.images) and target.labels is None
    flat = tmp_path / "flat"
    flat.mkdir()
    (tmp_path / "train/dog/1.png").rename(flat / "x.png")
    assert load_target(flat, config, form).ids.tolist() == ["x.png"]


def test_an_npz_and_a_pixel_csv_for_an_image_study(tmp_path):
    config, form = folder_study(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images)
    target = load_target(tmp_path / "a.npz", config, form)
    assert np.array_equal(target.images, images) and target.ids.tolist() == [0, 1, 2, 3] and target.labels is None
    np.savez(tmp_path / "b.npz", images=images, labels=np.array(["cat", "dog", "dog", "cat"]))
    assert load_target(tmp_path / "b.npz", config, form).labels.tolist() == ["cat", "dog", "dog", "cat"]
    frame = request_frame(target, form)  # the served model's rows, written as a csv, read back the same
    frame.to_csv(tmp_path / "rows.csv", index=False)
    again = load_target(tmp_path / "rows.csv", config, form)
    assert np.array_equal(again.images, images) and again.ids.tolist() == ["0", "1", "2", "3"]
    assert np.array_equal(request_target(frame, form).images, images)
    assert answer(again, np.eye(2)[[1, 0, 0, 1]], form)["label"].tolist() == ["dog", "cat", "cat", "dog"]


def test_a_csv_like_the_studys_codes_side_inputs_as_training_did(tmp_path):
    pixel_frame().to_csv(tmp_path / "t.csv", index=False)
    config = DataConfig(source="csv", path=tmp_path / "t.csv", label="label", side_inputs=["shape", "weight"])
    form = row_format(config, load_study_data(config))
    assert form.side == {"shape": ("round", "square"), "weight": None}
    rows = pixel_frame().drop(columns="label").iloc[[1, 2]]
    rows.insert(0, "id", ["q", "r"])
    rows.to_csv(tmp_path / "p.csv", index=False)
    target = load_target(tmp_path / "p.csv", config, form)
    assert target.ids.tolist() == ["q", "r"] and target.labels is None
    assert target.side["shape"].ravel().tolist() == [1, 0] and target.side["weight"].ravel().tolist() == [0.5, 1.0]
    assert np.array_equal(request_target(request_frame(target, form), form).side["shape"], target.side["shape"])
    rows.assign(shape=["round", "hexagon"]).to_csv(tmp_path / "bad.csv", index=False)
    assert "row 2, column 'shape': 'hexagon' is not a value the study trained on; allowed: round, square" in \
        refused(tmp_path / "bad.csv", config, form)
    assert "side inputs (shape, weight), which only a csv gives" in refused(tmp_path, config, form)


def test_incompatible_files_are_refused_naming_what_is_allowed(tmp_path):
    config, form = folder_study(tmp_path)
    (tmp_path / "big").mkdir()
    cv2.imwrite(str(tmp_path / "big/a.png"), np.zeros((9, 9), np.uint8))
    assert "images are 9x9 px grayscale, but the study's model takes 8x8 px grayscale" in \
        refused(tmp_path / "big", config, form)
    (tmp_path / "notes.txt").write_text("x")
    assert "a '.txt' file; allowed --data: a folder of PNG/JPG images" in refused(tmp_path / "notes.txt", config, form)
    assert "no such file or folder" in refused(tmp_path / "nope", config, form)
    (tmp_path / "big/readme.md").write_text("x")
    assert "readme.md: not an image file" in refused(tmp_path / "big", config, form)
    pd.DataFrame({"id": [1], "0": [3]}).to_csv(tmp_path / "one.csv", index=False)
    assert "1 pixel columns" not in refused(tmp_path / "one.csv", config, form)  # 1x1 is square: a size mismatch
    contest = DataConfig(source="synthetic", n=50)
    contest_form = row_format(contest, load_study_data(contest))
    assert "this study trains on contest data" in refused(tmp_path / "big", contest, contest_form)
    assert "missing column(s) letter" in refused(tmp_path / "one.csv", contest, contest_form)
