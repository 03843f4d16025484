"""The user's own images: a class-folder tree, an .npz archive, or a generic csv (pixel or image-path columns).

Each loader returns (images uint8 (N, S, S) or (N, S, S, 3), label names (N,), side inputs as read); every bad
input is refused with one line naming the file, row or path and what is allowed, before anything trains.
`predict` reads the files it predicts through the same functions (labels optional, a folder flat or not), so an
image it predicts is decoded, resized and checked exactly as a training image was. Images are decoded by OpenCV.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import DataError
from harness.study.sections import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ALLOWED_SUFFIXES = ", ".join(IMAGE_SUFFIXES)
Loaded = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


def read_image(path: Path, config: DataConfig, where: str) -> np.ndarray:
    """One PNG/JPG as uint8 (H, W) grayscale or (H, W, 3) RGB, resized when the spec names a size.

    `where` names the image for the error (its path, or the csv row that names it). A corrupt file makes OpenCV
    and libpng print their own lines on the native stderr before returning None; those are silenced, so the error
    stays one line."""
    import cv2

    from harness.env import native_stderr_silenced

    named = where if where == str(path) else f"{where}: {path}"
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{named}: cannot read: {err.strerror}") from None
    flag = cv2.IMREAD_COLOR if config.color == "rgb" else cv2.IMREAD_GRAYSCALE
    with native_stderr_silenced():
        image = cv2.imdecode(raw, flag) if raw.size else None
    if image is None:
        raise DataError(f"{named}: not a readable image; allowed: PNG or JPG files")
    if config.color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return resize(image, config)


def resize(image: np.ndarray, config: DataConfig) -> np.ndarray:
    import cv2

    if config.resize is None:
        return image
    methods = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
               "nearest": cv2.INTER_NEAREST}
    return cv2.resize(image, (config.resize, config.resize), interpolation=methods[config.interpolation])


def stack(images: list[np.ndarray], names: list[str]) -> np.ndarray:
    """One array, refusing mixed or non-square sizes (which need `data.resize`)."""
    first = images[0].shape
    for image, name in zip(images, names, strict=True):
        if image.shape != first:
            raise DataError(f"{name}: {_size(image)}, but {names[0]} is {_size(images[0])}; mixed sizes need "
                            "data.resize (e.g. resize: 32)")
        if image.shape[0] != image.shape[1]:
            raise DataError(f"{name}: {_size(image)} is not square; allowed: square images, or data.resize")
    return np.ascontiguousarray(np.stack(images))


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]} px"


def load_folder(config: DataConfig) -> Loaded:
    root = Path(config.path)
    layout = f"allowed: {root}/<class>/<image> with suffix {ALLOWED_SUFFIXES}"
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; source 'folder' needs one subfolder per class ({layout})")
    entries = _entries(root)
    for entry in entries:
        if not entry.is_dir():
            raise DataError(f"{entry}: a file outside any class folder; {layout}")
    if len(entries) < 2:
        raise DataError(f"{root}: {len(entries)} class folder(s); allowed: at least 2 subfolders, one per class")
    files, labels = [], []
    for folder in entries:
        found = _image_files(folder, layout)
        if not found:
            raise DataError(f"{folder}: empty class folder; {layout}")
        files += found
        labels += [folder.name] * len(found)
    return read_images(files, config), np.array(labels), {}


def folder_images(root: Path, config: DataConfig) -> tuple[np.ndarray, list[str]]:
    """The images of a folder to predict: flat, or in subfolders whose names are not read (no labels), with each
    file's path inside the folder as its id; read, resized and checked as `load_folder` does for training."""
    layout = f"allowed: {root}/<image> or {root}/<subfolder>/<image> with suffix {ALLOWED_SUFFIXES}"
    files = []
    for entry in _entries(root):
        files += _image_files(entry, layout) if entry.is_dir() else _image_files(root, layout, [entry])
    if not files:
        raise DataError(f"{root}: no images; {layout}")
    return read_images(files, config), [file.relative_to(root).as_posix() for file in files]


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_files(folder: Path, layout: str, entries: list[Path] | None = None) -> list[Path]:
    """The folder's (or the given) entries, each an image file: anything else is refused."""
    files = _entries(folder) if entries is None else entries
    for file in files:
        if file.is_dir() or file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{file}: not an image file; {layout}")
    return files


def read_images(files: list[Path], config: DataConfig) -> np.ndarray:
    return stack([read_image(file, config, str(file)) for file in files], [str(file) for file in files])


def load_npz(config: DataConfig) -> Loaded:
    hints = {"images": "data.images", "labels": "data.labels"}
    images, labels = npz_arrays(Path(config.path), config, {"images": config.images, "labels": config.labels}, hints)
    return images, labels, {}


def npz_arrays(path: Path, config: DataConfig, names: dict[str, str], hints: dict[str, str],
               labels_required: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The archive's images (uint8, resized as `config` says) and label names (None when optional and absent).
    `names`: images/labels -> array name; `hints` say where each name comes from, for the messages."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated archive is a BadZipFile
        raise DataError(f"{path}: not a readable .npz archive ({err}); allowed: numpy.savez output") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single array, not an .npz archive; allowed: numpy.savez(images=..., labels=...)")
    arrays = {}
    for key, name in names.items():
        if name not in archive.files:
            if key == "labels" and not labels_required:
                continue
            raise DataError(f"{path}: no array '{name}' ({hints[key]}); arrays in the file: {', '.join(archive.files)}")
        try:
            arrays[key] = archive[name]
        except (zipfile.BadZipFile, EOFError, OSError) as err:  # the directory read, the member cut short
            raise DataError(f"{path}: array '{name}' is truncated or corrupt ({err}); allowed: numpy.savez "
                            "output") from None
        except ValueError as err:
            raise DataError(f"{path}: array '{name}' cannot be read without pickle ({err}); allowed: numeric "
                            "images and numeric or string labels") from None
    images, labels = arrays["images"], arrays.get("labels")
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))
    if not shape_ok or len(images) == 0:
        raise DataError(f"{path}: '{names['images']}' has shape {images.shape}; allowed: (N, H, W), (N, H, W, 1) "
                        "or (N, H, W, 3)")
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iuU"):
        raise DataError(f"{path}: '{names['labels']}' is {labels.dtype} {labels.shape}; allowed: integers or "
                        f"strings of shape ({len(images)},), one per image")
    images = _as_uint8(images, path, names["images"])
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    where = [f"{path}: image {index}" for index in range(len(images))]
    return stack([resize(image, config) for image in images], where), None if labels is None else labels.astype(str)


def _as_uint8(images: np.ndarray, path: Path, name: str) -> np.ndarray:
    """uint8 as is; integers in 0..255; floats in [0, 1] (scaled by 255). Anything else is refused."""
    allowed = "allowed: uint8, integers 0..255 or floats in [0, 1]"
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu":
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{path}: '{name}' has values {images.min()}..{images.max()}; {allowed}")
        return images.astype(np.uint8)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: '{name}' has float values outside [0, 1] (or NaN); {allowed}")
        return np.rint(images * 255).astype(np.uint8)
    raise DataError(f"{path}: '{name}' is {images.dtype}; {allowed}")


def load_generic_csv(config: DataConfig) -> Loaded:
    path = Path(config.path)
    rows = csv_rows(read_csv_frame(path), path, config)
    return rows.images, rows.labels, rows.side


def read_csv_frame(path: Path):  # -> pd.DataFrame of strings
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable csv: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class CsvRows:
    images: np.ndarray
    labels: np.ndarray | None  # label names; None when the label column is optional and absent
    side: dict[str, np.ndarray]  # side input name -> the column's values as read (strings), coded by `code_side`
    ids: np.ndarray  # the `id` column, else the image paths (image_column), else row numbers from 1


def csv_rows(frame, path: Path, config: DataConfig, labelled: bool = True, channels: int = 1) -> CsvRows:
    """A generic csv's rows (a file's, or a served model's request): training needs the label column, predict
    reads it when present. Pixel columns are every column but the label, side inputs and `id`, holding S*S*channels
    values per row (channels last)."""
    has_label = labelled or config.label in frame.columns
    wanted = [*([config.label] if has_label else []), *config.side_inputs,
              *([config.image_column] if config.image_column else [])]
    for column in wanted:
        if column not in frame.columns:
            shown = ", ".join(list(frame.columns)[:12]) + (", ..." if len(frame.columns) > 12 else "")
            raise DataError(f"{path}: no column '{column}'; columns: {shown}")
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    for column in wanted:
        empty = np.flatnonzero(frame[column].str.strip() == "")
        if len(empty):
            raise DataError(f"{path}: row {empty[0] + 1}: empty value in column '{column}'")
    if config.image_column:
        files = [path.parent / value for value in frame[config.image_column]]
        where = [f"{path}: row {row + 1}" for row in range(len(frame))]
        images = stack([read_image(file, config, at) for file, at in zip(files, where, strict=True)], where)
    else:
        pixels = frame.drop(columns=[c for c in [*wanted, "id"] if c in frame.columns])
        images = _pixel_columns(pixels, path, config, channels, ", or data.image_column" if labelled else "")
    side = {name: frame[name].to_numpy(str) for name in config.side_inputs}
    if "id" in frame.columns:
        ids = frame["id"].to_numpy(str)
    else:
        ids = frame[config.image_column].to_numpy(str) if config.image_column else np.arange(1, len(frame) + 1)
    return CsvRows(images, frame[config.label].to_numpy(str) if has_label else None, side, ids)


def _pixel_columns(pixels, path: Path, config: DataConfig, channels: int, alternative: str) -> np.ndarray:
    side = math.isqrt(pixels.shape[1] // channels)
    if pixels.shape[1] == 0 or side * side * channels != pixels.shape[1]:
        each = "S*S" if channels == 1 else f"S*S*{channels}"
        raise DataError(f"{path}: {pixels.shape[1]} pixel columns (all but the label, side inputs and 'id') is not "
                        f"a square image; allowed: {each} columns (e.g. {28 * 28 * channels} for 28x28){alternative}")
    values = pixels.to_numpy()
    numbers = np.char.isdigit(values.astype(str))
    if not numbers.all():
        row, col = np.argwhere(~numbers)[0]
        raise DataError(f"{path}: row {row + 1}, column '{pixels.columns[col]}': {values[row, col]!r} is not a "
                        "pixel value; allowed: integers 0..255")
    grid = values.astype(np.int64)
    if grid.max() > 255:
        row, col = np.argwhere(grid > 255)[0]
        raise DataError(f"{path}: row {row + 1}, column '{pixels.columns[col]}': {grid[row, col]} is out of range; "
                        "allowed: integers 0..255")
    shape = (len(grid), side, side) if channels == 1 else (len(grid), side, side, channels)
    images = grid.astype(np.uint8).reshape(shape)
    return np.stack([resize(image, config) for image in images]) if config.resize else images


def code_side(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A side input as a model sees it, shape (N, 1): numbers as float32 (categories None), anything else as int32
    codes into its sorted distinct values (returned: predict codes its file's values by the same list)."""
    try:
        return values.astype(np.float32)[:, None], None
    except ValueError:
        categories, codes = np.unique(values, return_inverse=True)
        return codes.astype(np.int32)[:, None], tuple(str(c) for c in categories)


def code_side_like(values: np.ndarray, categories: tuple[str, ...] | None, path: Path, column: str) -> np.ndarray:
    """Values to predict coded as training coded its own (`code_side`); a value training never saw is refused."""
    if categories is None:
        try:
            return values.astype(np.float32)[:, None]
        except ValueError:
            row = next(i for i, value in enumerate(values) if not _is_number(value))
            raise DataError(f"{path}: row {row + 1}, column '{column}': {str(values[row])!r} is not a number; allowed: "
                            "numbers, as in the study's data") from None
    codes = np.searchsorted(np.array(categories), values)
    known = (codes < len(categories)) & (np.array((*categories, ""))[codes] == values)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        shown = ", ".join(categories[:10]) + (", ..." if len(categories) > 10 else "")
        raise DataError(f"{path}: row {row + 1}, column '{column}': {str(values[row])!r} is not a value the study "
                        f"trained on; allowed: {shown}")
    return codes.astype(np.int32)[:, None]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
