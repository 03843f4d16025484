"""Contest CSV loading/validation, the CSV round trip, and the synthetic set's determinism and realism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import DataError
from harness.training.data import Dataset, load_contest_csv, write_contest_csv
from harness.training.synthetic import export_synthetic, synthesize


def pixel_statistics(dataset: Dataset) -> dict[str, float]:
    """The data README's per-image summary numbers, to compare synthetic with real images."""
    images = dataset.images.reshape(len(dataset), -1)
    return {
        "fraction_at_most_4": float((images <= 4).mean()),
        "mean_pixels_above_4": float((images > 4).sum(axis=1).mean()),
        "mean_pixels_at_least_140": float((images >= 140).sum(axis=1).mean()),
    }


REAL_TRAIN = Path(__file__).parents[3] / "shared/data/dacon2020/train.csv.gz"


@pytest.fixture(scope="module")
def small() -> Dataset:
    return synthesize(60, seed=3)


def _frame(dataset: Dataset) -> pd.DataFrame:
    frame = pd.DataFrame(dataset.images.reshape(len(dataset), -1), columns=[str(i) for i in range(784)])
    frame.insert(0, "letter", dataset.letters)
    frame.insert(0, "digit", dataset.digits)
    frame.insert(0, "id", dataset.ids)
    return frame


def _expect_error(frame: pd.DataFrame, path: Path, *fragments: str) -> str:
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        load_contest_csv(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("name", ["train.csv", "train.csv.gz"])
def test_round_trip(small: Dataset, tmp_path: Path, name: str) -> None:
    loaded = load_contest_csv(write_contest_csv(small, tmp_path / name))
    np.testing.assert_array_equal(loaded.ids, small.ids)
    np.testing.assert_array_equal(loaded.images, small.images)
    np.testing.assert_array_equal(loaded.digits, small.digits)
    np.testing.assert_array_equal(loaded.letters, small.letters)
    assert loaded.images.dtype == np.uint8 and loaded.ids.dtype == np.int64 and loaded.digits.dtype == np.int64
    assert loaded.fingerprint == small.fingerprint
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_writes_train_and_test(tmp_path: Path) -> None:
    train_path, test_path = export_synthetic(tmp_path, n_train=30, n_test=20, seed=1)
    train, test = load_contest_csv(train_path), load_contest_csv(test_path)
    assert test.digits is None and len(test) == 20 and len(train) == 30
    assert test.ids[0] == 31 and not np.array_equal(test.images[:20], train.images[:20])
    assert list(pd.read_csv(test_path, nrows=0).columns[:2]) == ["id", "letter"]


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda f: f.drop(columns=["17"]), ["missing column", "17"]),
        (lambda f: f.drop(columns=["letter"]), ["missing column", "letter"]),
        (lambda f: f.assign(extra=1), ["unexpected column", "extra"]),
        (lambda f: f[[*f.columns[:3], "1", "0", *f.columns[5:]]], ["column 4", "'1'", "'0'"]),
        (lambda f: f.assign(**{"5": f["5"].where(f.index != 4, 256)}), ["row 5", "id 5", "'5'", " 256 ", "0..255"]),
        (lambda f: f.assign(**{"9": f["9"].where(f.index != 0, -1)}), ["row 1", "column '9'", "-1"]),
        (lambda f: f.assign(**{"3": f["3"].astype(float).where(f.index != 2, 1.5)}), ["row 3", "column '3'", "1.5"]),
        (lambda f: f.assign(**{"3": f["3"].astype(object).where(f.index != 6, "x")}), ["row 7", "column '3'", "'x'"]),
        (lambda f: f.assign(digit=f["digit"].where(f.index != 1, 10)), ["row 2", "column 'digit'", "10", "0..9"]),
        (lambda f: f.assign(letter=f["letter"].where(f.index != 3, "a")), ["row 4", "column 'letter'", "'a'", "A..Z"]),
        (lambda f: f.assign(letter=f["letter"].where(f.index != 3, "AB")), ["row 4", "'AB'", "A..Z"]),
        (lambda f: f.assign(id=f["id"].where(f.index != 8, 2)), ["row 9", "id 2", "row 2", "unique"]),
        (lambda f: f.assign(id=f["id"].astype(object).where(f.index != 0, "one")), ["row 1", "column 'id'", "'one'"]),
    ],
)
def test_bad_csv_names_file_row_and_column(small: Dataset, tmp_path: Path, change, fragments) -> None:
    _expect_error(change(_frame(small)), tmp_path / "bad.csv", *fragments)


def test_missing_and_unparseable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_contest_csv(tmp_path / "nope.csv")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="broken.csv.gz: not a readable CSV") as caught:
        load_contest_csv(broken)
    assert "\n" not in str(caught.value)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("id,digit,letter," + ",".join(str(i) for i in range(784)) + "\n")
    with pytest.raises(DataError, match="no data rows"):
        load_contest_csv(header_only)


def test_synthesize_is_deterministic_balanced_and_realistic() -> None:
    first, again, other = synthesize(260, 7), synthesize(260, 7), synthesize(260, 8)
    assert first.images.tobytes() == again.images.tobytes() and first.fingerprint == again.fingerprint
    assert not np.array_equal(first.images, other.images) and first.fingerprint != other.fingerprint
    assert np.bincount(first.digits, minlength=10).tolist() == [26] * 10
    assert sorted(set(first.letters.tolist())) == [chr(code) for code in range(65, 91)]
    stats = pixel_statistics(first)
    assert 0.6 < stats["fraction_at_most_4"] < 0.78
    assert 180 < stats["mean_pixels_above_4"] < 310
    assert 40 < stats["mean_pixels_at_least_140"] < 100
    with pytest.raises(DataError, match="n must be a positive integer"):
        synthesize(0, 1)


def test_synthesize_is_identical_in_another_process() -> None:
    code = "from harness.training.synthetic import synthesize; print(synthesize(50, 11).fingerprint)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == synthesize(50, 11).fingerprint


def test_dataset_arrays_are_read_only(small: Dataset) -> None:
    with pytest.raises(ValueError):
        small.images[0, 0, 0] = 1
    with pytest.raises(ValueError):
        small.digits[0] = 1


def test_real_training_file_matches_readme() -> None:
    if not REAL_TRAIN.is_file():
        pytest.skip(f"real data not present at {REAL_TRAIN}")
    real = load_contest_csv(REAL_TRAIN)
    assert len(real) == 1537 and real.digits is not None
    assert set(real.letters.tolist()) == {chr(code) for code in range(65, 91)}
    stats = pixel_statistics(real)
    assert abs(stats["fraction_at_most_4"] - 0.69) < 0.02
    assert abs(stats["mean_pixels_above_4"] - 242) < 10
    assert abs(stats["mean_pixels_at_least_140"] - 69) < 5
