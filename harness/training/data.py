"""Contest data: load and validate the Dacon 2020 CSV format (`id,digit,letter,0..783`) and write it back.

Every malformed file is refused with one line naming the file, the row (and id) and the column; a loaded
`Dataset` is read-only, so its content fingerprint (the cache and run-key input) stays valid.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import DataError
from harness.files import atomic_output

SIDE = 28
PIXEL_COLUMNS = tuple(str(index) for index in range(SIDE * SIDE))
TRAIN_COLUMNS = ("id", "digit", "letter", *PIXEL_COLUMNS)
TEST_COLUMNS = ("id", "letter", *PIXEL_COLUMNS)
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with their ids and labels; arrays are made read-only so the fingerprint stays valid."""

    ids: np.ndarray  # int64, shape (N,)
    images: np.ndarray  # uint8, shape (N, 28, 28)
    digits: np.ndarray | None  # int64 in 0..9, shape (N,); None for a test file
    letters: np.ndarray  # '<U1' in 'A'..'Z', shape (N,)
    source: str  # where it came from, for messages and run records

    def __post_init__(self) -> None:
        count = len(self.ids)
        if self.images.dtype != np.uint8 or self.images.shape != (count, SIDE, SIDE):
            found = f"{self.images.dtype} {self.images.shape}"
            raise ValueError(f"images must be uint8 ({count}, {SIDE}, {SIDE}), got {found}")
        if self.digits is not None and self.digits.shape != (count,):
            raise ValueError(f"digits must have shape ({count},), got {self.digits.shape}")
        if self.letters.shape != (count,):
            raise ValueError(f"letters must have shape ({count},), got {self.letters.shape}")
        for array in (self.ids, self.images, self.digits, self.letters):
            if array is not None:
                array.setflags(write=False)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash (16 hex chars): the preprocessing cache key, equal across processes and machines."""
        digest = hashlib.sha256()
        digest.update(f"dataset-v1 n={len(self)};".encode())
        digest.update(np.ascontiguousarray(self.ids, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(self.images, dtype=np.uint8).tobytes())
        if self.digits is None:
            digest.update(b"no-digits")
        else:
            digest.update(np.ascontiguousarray(self.digits, dtype="<i8").tobytes())
        digest.update("".join(self.letters.tolist()).encode("ascii"))
        return digest.hexdigest()[:16]



# ---------------------------------------------------------------- loading


def _where(path: Path, row: int, ids: np.ndarray | None) -> str:
    """'FILE: row R (id I)' with a 1-based data row, naming the id when it is known."""
    id_part = f" (id {ids[row]})" if ids is not None else ""
    return f"{path}: row {row + 1}{id_part}"


def _check_columns(path: Path, columns: list[str]) -> bool:
    """Require the exact contest header; return True for the train format (with `digit`)."""
    is_train = "digit" in columns
    expected = TRAIN_COLUMNS if is_train else TEST_COLUMNS
    missing = [name for name in expected if name not in columns]
    extra = [name for name in columns if name not in expected]
    allowed = "expected id,digit,letter,0..783 (train) or id,letter,0..783 (test)"
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path}: missing column(s) {shown}; {allowed}")
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise DataError(f"{path}: unexpected column(s) {shown}; {allowed}")
    for position, (found, wanted) in enumerate(zip(columns, expected, strict=True)):
        if found != wanted:
            raise DataError(f"{path}: column {position + 1} is '{found}' but should be '{wanted}'; {allowed}")
    return is_train


def _integers(path: Path, frame: pd.DataFrame, low: int, high: int, what: str, ids: np.ndarray | None) -> np.ndarray:
    """The block as int64, or a DataError naming the first cell (row-major) that is not an integer in range."""
    if all(pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) for dtype in frame.dtypes):
        values = frame.to_numpy(dtype=np.int64)
        bad = (values < low) | (values > high)
    else:  # slow path, only reached when something is wrong or written as floats like 5.0
        numeric = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(numeric) | (numeric != np.floor(numeric)) | (numeric < low) | (numeric > high)
        values = np.where(bad, 0, numeric).astype(np.int64)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        value = frame.iat[row, column]
        value = value.item() if isinstance(value, np.generic) else value  # 256, not np.int64(256)
        raise DataError(
            f"{_where(path, row, ids)}, column '{frame.columns[column]}': {what} {value!r} "
            f"is not an integer in {low}..{high}"
        )
    return values


# what pandas raises for a file that is not a CSV at all (binary, truncated or corrupt gzip, wrong encoding)
UNREADABLE_FILE = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError, zlib.error)


def load_contest_csv(path: str | Path) -> Dataset:
    """Read a train or test CSV (optionally .gz) in the contest format, rejecting anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except UNREADABLE_FILE as error:
        detail = " ".join(str(error).split())
        raise DataError(f"{path}: not a readable CSV ({detail})") from error
    return contest_dataset(frame, path)


def contest_dataset(frame: pd.DataFrame, source: str | Path) -> Dataset:
    """Rows in the contest format (a file's, or a served model's request) as a Dataset; `source` names them in
    errors."""
    path = Path(source)
    columns = [str(name) for name in frame.columns]
    is_train = _check_columns(path, columns)
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header; expected at least one image")
    frame = frame.set_axis(columns, axis=1)

    ids = _integers(path, frame[["id"]], 0, np.iinfo(np.int64).max, "id", None)[:, 0]
    duplicated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise DataError(f"{path}: row {row + 1}: id {ids[row]} repeats row {first + 1}; ids must be unique")

    digits = _integers(path, frame[["digit"]], 0, 9, "digit", ids)[:, 0] if is_train else None
    letters = frame["letter"].astype(object).to_numpy()
    bad_letter = ~pd.Series(letters).isin(LETTERS).to_numpy()
    if bad_letter.any():
        row = int(np.flatnonzero(bad_letter)[0])
        raise DataError(
            f"{_where(path, row, ids)}, column 'letter': {letters[row]!r} is not a single uppercase letter A..Z"
        )
    pixels = _integers(path, frame[list(PIXEL_COLUMNS)], 0, 255, "pixel", ids)
    return Dataset(
        ids=ids,
        images=pixels.astype(np.uint8).reshape(-1, SIDE, SIDE),
        digits=digits,
        letters=letters.astype("<U1"),
        source=str(path),
    )


def letter_input(dataset: Dataset) -> np.ndarray:
    """The `letter` side input a model sees: codes 0..25, shape (N, 1), int32 (training and serving alike)."""
    return np.searchsorted(np.array(LETTERS), dataset.letters).astype(np.int32)[:, None]


def contest_frame(dataset: Dataset) -> pd.DataFrame:
    """The inverse of `contest_dataset`: id, [digit,] letter, 0..783."""
    pixels = pd.DataFrame(dataset.images.reshape(len(dataset), -1).astype(np.int64), columns=list(PIXEL_COLUMNS))
    head = {"id": dataset.ids, **({} if dataset.digits is None else {"digit": dataset.digits}),
            "letter": dataset.letters.astype(object)}
    return pd.concat([pd.DataFrame(head), pixels], axis=1)


def write_contest_csv(dataset: Dataset, path: str | Path) -> Path:
    """Write the contest format (train if digits are present); gzip when the name ends in .gz. Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = contest_frame(dataset)
    compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
    with atomic_output(path) as stream:
        frame.to_csv(stream, index=False, compression=compression, lineterminator="\n")
    return path
