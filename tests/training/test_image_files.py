"""The user's own data: class folders, .npz archives and generic csv files; good input and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from harness.errors import DataError, SpecError
from harness.study.sections import DataConfig
from harness.study.spec import parse_spec
from harness.training.sources import load_study_data


def _image(seed: int, side: int = 8, rgb: bool = False) -> np.ndarray:
    shape = (side, side, 3) if rgb else (side, side)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_folder(root: Path, per_class: int = 3, side: int = 8, suffix: str = ".png", rgb: bool = False) -> Path:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = _image(hash((label, index)) % 1000, side, rgb)
            assert cv2.imwrite(str(root / label / f"{index}{suffix}"), image[..., ::-1] if rgb else image)
    return root


def folder(path: Path, **options) -> DataConfig:
    return DataConfig(source="folder", path=path, **options)


def load_error(config: DataConfig) -> str:
    with pytest.raises(DataError) as caught:
        load_study_data(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- folder


def test_folder_reads_classes_sorted_with_labels_and_a_stable_fingerprint(tmp_path):
    root = write_folder(tmp_path / "train")
    data = load_study_data(folder(root))
    assert data.classes == ("cat", "dog") and data.digits.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.images.shape == (6, 8, 8) and data.images.dtype == np.uint8 and data.input_shape == (8, 8, 1)
    assert np.array_equal(data.images[0], cv2.imread(str(root / "cat/0.png"), cv2.IMREAD_GRAYSCALE))
    assert load_study_data(folder(root)).fingerprint == data.fingerprint
    cv2.imwrite(str(root / "dog/2.png"), _image(99))
    assert load_study_data(folder(root)).fingerprint != data.fingerprint


def test_folder_rgb_and_a_named_resize(tmp_path):
    root = write_folder(tmp_path / "train", side=10, rgb=True, suffix=".jpg")
    cv2.imwrite(str(root / "cat/big.png"), _image(5, 20, rgb=True))
    data = load_study_data(folder(root, color="rgb", resize=6, interpolation="linear"))
    assert data.images.shape == (7, 6, 6, 3) and data.input_shape == (6, 6, 3)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: (root / "stray.png").write_bytes(b"x"), "stray.png: a file outside any class folder"),
        (lambda root: (root / "cat/notes.txt").write_text("hi"), "notes.txt: not an image file; allowed:"),
        (lambda root: (root / "cat/broken.png").write_bytes(b"not a png"), "broken.png: not a readable image"),
        (lambda root: cv2.imwrite(str(root / "dog/big.png"), _image(1, 12)), "big.png: 12x12 px, but"),
        (lambda root: cv2.imwrite(str(root / "dog/wide.png"), np.zeros((8, 9), np.uint8)), "wide.png: 9x8 px"),
        (lambda root: (root / "empty").mkdir(), "empty: empty class folder"),
        (lambda root: (root / "cat/sub").mkdir(), "sub: not an image file"),
    ],
)
def test_bad_folders_are_refused_naming_the_file(tmp_path, damage, expected):
    root = write_folder(tmp_path / "train")
    damage(root)
    assert expected in load_error(folder(root))


def test_folder_that_is_missing_or_has_one_class(tmp_path):
    assert "no such folder" in load_error(folder(tmp_path / "nope"))
    root = tmp_path / "one"
    (root / "only").mkdir(parents=True)
    cv2.imwrite(str(root / "only/a.png"), _image(0))
    assert "1 class folder(s); allowed: at least 2" in load_error(folder(root))


def test_mixed_sizes_load_with_resize(tmp_path):
    root = write_folder(tmp_path / "train")
    cv2.imwrite(str(root / "dog/big.png"), _image(1, 12))
    assert load_study_data(folder(root, resize=8)).images.shape == (7, 8, 8)


# ---------------------------------------------------------------- npz


def npz(path: Path, **options) -> DataConfig:
    return DataConfig(source="npz", path=path, images=options.pop("images", "x"), labels=options.pop("labels", "y"),
                      **options)


def test_npz_integer_float_and_string_labels(tmp_path):
    images = np.stack([_image(i) for i in range(6)])
    np.savez(tmp_path / "a.npz", x=images, y=np.array([3, 1, 3, 1, 3, 1]))
    data = load_study_data(npz(tmp_path / "a.npz"))
    assert data.classes == ("1", "3") and data.digits.tolist() == [1, 0, 1, 0, 1, 0]
    assert np.array_equal(data.images, images)
    np.savez(tmp_path / "b.npz", x=images[..., None] / 255.0, y=np.array(list("ababab")))
    other = load_study_data(npz(tmp_path / "b.npz"))
    assert np.array_equal(other.images, images) and other.classes == ("a", "b")


@pytest.mark.parametrize(
    "arrays, options, expected",
    [
        ({"x": np.zeros((4, 8, 8), np.uint8)}, {}, "no array 'y' (data.labels); arrays in the file: x"),
        ({"x": np.zeros((4, 8), np.uint8), "y": np.arange(4)}, {}, "has shape (4, 8); allowed: (N, H, W)"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.arange(3)}, {}, "one per image"),
        ({"x": np.full((4, 8, 8), 2.0), "y": np.arange(4)}, {}, "float values outside [0, 1]"),
        ({"x": np.full((4, 8, 8), 300), "y": np.arange(4)}, {}, "values 300..300"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([0.5, 1, 2, 3])}, {}, "allowed: integers or strings"),
        ({"x": np.zeros((4, 8, 6), np.uint8), "y": np.arange(4)}, {}, "6x8 px is not square"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, int)}, {}, "allowed: at least 2 classes"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([{}, {}, {}, {}])}, {}, "cannot be read without pickle"),
    ],
)
def test_bad_npz_is_refused_naming_the_array(tmp_path, arrays, options, expected):
    np.savez(tmp_path / "d.npz", **arrays)
    message = load_error(npz(tmp_path / "d.npz", **options))
    assert expected in message and "d.npz" in message


def test_npz_file_missing_or_not_an_archive(tmp_path):
    assert "file not found" in load_error(npz(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_text("junk")
    assert "not a readable .npz archive" in load_error(npz(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    assert "a single array, not an .npz archive" in load_error(npz(tmp_path / "single.npy"))


# ---------------------------------------------------------------- generic csv


def csv(path: Path, **options) -> DataConfig:
    return DataConfig(source="csv", path=path, label=options.pop("label", "label"), **options)


def pixel_frame(n: int = 6, side: int = 3) -> pd.DataFrame:
    pixels = np.random.default_rng(0).integers(0, 256, (n, side * side))
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(side * side)])
    frame.insert(0, "label", ["a", "b"] * (n // 2))
    frame.insert(1, "shape", ["round", "square", "round"] * (n // 3))
    frame.insert(2, "weight", np.arange(n) / 2)
    return frame


def test_csv_pixel_columns_with_side_inputs(tmp_path):
    frame = pixel_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_study_data(csv(tmp_path / "t.csv", side_inputs=["shape", "weight"]))
    assert data.images.shape == (6, 3, 3) and data.digits.tolist() == [0, 1] * 3
    assert data.images[1].ravel().tolist() == frame.iloc[1, 3:].tolist()
    assert data.side["shape"].ravel().tolist() == [0, 1, 0, 0, 1, 0] and data.side["shape"].dtype == np.int32
    assert data.side["weight"].dtype == np.float32 and data.side["weight"][3, 0] == 1.5


def test_csv_image_path_column(tmp_path):
    root = write_folder(tmp_path / "imgs")
    rows = [{"file": f"imgs/{label}/{i}.png", "kind": label} for label in ("cat", "dog") for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "index.csv", index=False)
    data = load_study_data(csv(tmp_path / "index.csv", label="kind", image_column="file"))
    assert data.images.shape == (6, 8, 8) and data.classes == ("cat", "dog")
    assert np.array_equal(data.images[4], cv2.imread(str(root / "dog/1.png"), cv2.IMREAD_GRAYSCALE))


def _frame_with(column: str, values: list) -> pd.DataFrame:
    frame = pixel_frame().drop(columns=["shape", "weight"])
    frame[column] = values
    return frame


@pytest.mark.parametrize(
    "frame, options, expected",
    [
        (pixel_frame(), {"label": "digit"}, "no column 'digit'; columns: label, shape"),
        (pixel_frame(), {"side_inputs": ["colour"]}, "no column 'colour'"),
        (_frame_with("label", ["a", "b", "", "b", "a", "b"]), {}, "row 3: empty value in column 'label'"),
        (_frame_with("p4", ["1", "2", "x", "4", "5", "6"]), {}, "row 3, column 'p4': 'x' is not a pixel value"),
        (_frame_with("p0", [1, 2, 3, 256, 5, 6]), {}, "row 4, column 'p0': 256 is out of range"),
        (_frame_with("p9", 0), {}, "10 pixel columns"),
        (_frame_with("p0", [1, 2, -3, 4, 5, 6]), {}, "row 3, column 'p0': '-3'"),
        (_frame_with("p1", [1, 2, 3, 4, 5, ""]), {}, "row 6, column 'p1': '' is not a pixel value"),
        (pixel_frame().iloc[:0], {}, "no data rows"),
    ],
)
def test_bad_csv_is_refused_naming_row_and_column(tmp_path, frame, options, expected):
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert expected in load_error(csv(tmp_path / "t.csv", **options))


def test_csv_image_paths_that_are_missing_or_unreadable(tmp_path):
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs/cat/bad.png").write_text("nope")
    for name, expected in (("imgs/cat/nope.png", "cannot read"), ("imgs/cat/bad.png", "not a readable image")):
        rows = pd.DataFrame({"file": ["imgs/cat/0.png", name], "kind": ["a", "b"]})
        rows.to_csv(tmp_path / "i.csv", index=False)
        error = load_error(csv(tmp_path / "i.csv", label="kind", image_column="file"))
        assert f"row 2: {tmp_path / name}: {expected}" in error and error.count(name) == 1


@pytest.mark.parametrize(
    "data, expected",
    [
        ("{source: folder}", "source 'folder' needs 'path'"),
        ("{source: folder, path: x, labels: y}", "'labels' is not used by source 'folder'"),
        ("{source: npz, path: x.npz, images: x}", "needs 'images' and 'labels'"),
        ("{source: csv, path: t.csv, side_inputs: [a]}", "'side_inputs' needs 'label'"),
        ("{source: csv, path: t.csv, label: y, color: rgb}", "'color: rgb' needs 'image_column'"),
        ("{source: folder, path: x, resize: 1000}", "data.resize"),
    ],
)
def test_data_options_are_checked_per_source(tmp_path, data, expected):
    with pytest.raises(SpecError, match="^[^\n]*$") as caught:
        parse_spec(f"name: s\ndata: {data}\n", tmp_path / "s.yaml")
    assert expected in str(caught.value)


def test_rgb_images_are_preprocessed_channel_by_channel_and_cached(tmp_path):
    from harness.study.pipeline import parse_pipeline
    from harness.training import preprocess

    rgb = np.stack([_image(seed, 8, rgb=True) for seed in range(5)])
    steps = parse_pipeline([{"upscale": {"factor": 2}}, "equalize", {"erode": {"kernel": 2}}], "p")
    out = preprocess.apply_pipeline(rgb, steps)
    assert out.shape == (5, 16, 16, 3) and out.dtype == np.float32
    for channel in range(3):
        alone = preprocess.apply_pipeline(np.ascontiguousarray(rgb[..., channel]), steps)
        assert np.array_equal(out[..., channel], alone)
    first, hit = preprocess.cached_pipeline(rgb, "fp-rgb", steps, tmp_path)
    again, hit_again = preprocess.cached_pipeline(rgb, "fp-rgb", steps, tmp_path)
    assert not hit and hit_again and np.array_equal(first, again)


def test_augmentation_section_is_refused_for_a_user_model(tmp_path):
    (tmp_path / "m.py").write_text("def build(*a):\n    pass\n")
    text = "name: a\nbase:\n  model: {builder: m.py:build}\n  augmentation: {enabled: true}\n"
    with pytest.raises(SpecError, match="augmentation belongs to the built-in CNN"):
        parse_spec(text, tmp_path / "a.yaml")
