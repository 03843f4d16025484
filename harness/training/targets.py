"""What `predict` (and the model it registers) predicts: `--data` read as the study's own kind of data.

A contest study (synthetic or contest csv) predicts a contest csv and answers `id,digit`. An image study (the
bundled digits, a folder, an npz, a generic csv) predicts a folder of images (flat, or in subfolders whose names
are not read), an .npz archive or a csv like the study's, and answers `id,label` with its class names. Every
file is read by the loaders training uses (image_files, data), resized as the study's spec says and checked
against the images the model trained on, so an incompatible file is refused in one line before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.study.sections import DataConfig
from harness.training import image_files
from harness.training.sources import StudyData

CONTEST_ANSWER, LABEL_ANSWER = "digit", "label"  # the answer's second column
NPZ_IMAGES, NPZ_LABELS = "images", "labels"  # array names in an .npz to predict, unless the study's data is an npz


@dataclass(frozen=True)
class RowFormat:
    """What the trained model reads and answers; it travels (pickled) with the served model."""

    contest: bool
    classes: tuple[str, ...]
    image_shape: tuple[int, ...]  # one image before the pipeline: (S, S) grayscale or (S, S, 3) RGB
    side: dict[str, tuple[str, ...] | None]  # a generic csv's side inputs: categories in code order, None: numeric
    label: str = LABEL_ANSWER  # the label column a generic csv may carry (used for accuracy)

    @property
    def answer(self) -> str:
        return CONTEST_ANSWER if self.contest else LABEL_ANSWER

    @property
    def channels(self) -> int:
        return 1 if len(self.image_shape) == 2 else self.image_shape[2]


@dataclass(frozen=True)
class Target:
    ids: np.ndarray  # contest ids, a file's path inside the folder, a csv's `id` (else row number), an npz index
    images: np.ndarray  # uint8, shaped like the study's training images
    side: dict[str, np.ndarray]  # coded as training coded them
    labels: np.ndarray | None  # class names as the file gives them (for accuracy); None when it gives none
    side_values: dict[str, np.ndarray]  # side inputs as read (a served request's example rows)


def is_contest(config: DataConfig) -> bool:
    return config.source == "synthetic" or (config.source == "csv" and config.label is None)


def row_format(config: DataConfig, train: StudyData) -> RowFormat:
    side = {name: train.side_categories.get(name) for name in config.side_inputs}
    return RowFormat(is_contest(config), train.classes, train.images.shape[1:], side, config.label or LABEL_ANSWER)


def load_target(path: str | Path, config: DataConfig, form: RowFormat) -> Target:
    """The file or folder to predict, read like the study's data, or a DataError saying what is allowed."""
    path = Path(path)
    if form.contest:
        return _contest(path)
    allowed = _allowed(form)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; allowed --data: {allowed}")
    suffix = path.suffix.lower()
    if (path.is_dir() or suffix == ".npz") and form.side:
        raise DataError(f"{path}: this study's model may take side inputs ({', '.join(form.side)}), which "
                        f"only a csv gives; allowed --data: {allowed}")
    if path.is_dir():
        images, names = image_files.folder_images(path, _read_config(config, path, form))
        target = Target(np.array(names), images, {}, None, {})
    elif suffix == ".npz":
        target = _npz(path, config, form)
    elif path.name.lower().endswith((".csv", ".csv.gz")):
        target = _csv(image_files.read_csv_frame(path), path, config, form)
    else:
        raise DataError(f"{path}: a '{suffix or path.name}' file; allowed --data: {allowed}")
    _check_shape(path, target.images, form)
    return target


def request_target(frame: Any, form: RowFormat) -> Target:
    """A served model's request (a DataFrame: the contest's rows, or `request_frame`'s columns) as a Target."""
    if form.contest:
        from harness.training.data import contest_dataset

        return _from_contest(contest_dataset(frame, "request"))
    config = DataConfig(source="csv", path=Path("request"), label=form.label, side_inputs=list(form.side))
    target = _csv(frame.astype(str), Path("request"), config, form)
    _check_shape(Path("request"), target.images, form)
    return target


def request_frame(target: Target, form: RowFormat) -> Any:
    """A target as the rows a served model reads: the contest's columns, or id, side inputs and one column per
    pixel value (the images as the model gets them before its pipeline, flattened, channels last)."""
    import pandas as pd

    if form.contest:
        from harness.training.data import LETTERS, PIXEL_COLUMNS

        letters = np.array(LETTERS)[target.side["letter"][:, 0]]
        pixels = pd.DataFrame(target.images.reshape(len(target.ids), -1).astype(np.int64), columns=list(PIXEL_COLUMNS))
        return pd.concat([pd.DataFrame({"id": target.ids, "letter": letters.astype(object)}), pixels], axis=1)
    flat = target.images.reshape(len(target.ids), -1).astype(np.int64)
    pixels = pd.DataFrame(flat, columns=[str(index) for index in range(flat.shape[1])])
    side = {name: target.side_values[name] if categories else target.side[name][:, 0]  # numbers as numbers
            for name, categories in form.side.items()}
    return pd.concat([pd.DataFrame({"id": target.ids, **side}), pixels], axis=1)


def answer(target: Target, probabilities: np.ndarray, form: RowFormat) -> Any:
    """`id,digit` (the contest's submission) or `id,label` with the study's class names."""
    import pandas as pd

    best = probabilities.argmax(axis=1)
    value = best.astype(np.int64) if form.contest else np.array(form.classes, dtype=object)[best]
    return pd.DataFrame({"id": target.ids, form.answer: value})


def _contest(path: Path) -> Target:
    from harness.training.data import load_contest_csv

    if path.is_dir():
        raise DataError(f"{path}: a folder; this study trains on contest data, so allowed --data: a contest csv "
                        "(id,letter,0..783, optionally with digit)")
    return _from_contest(load_contest_csv(path))


def _from_contest(dataset: Any) -> Target:
    from harness.training.data import letter_input

    labels = None if dataset.digits is None else dataset.digits.astype(str)
    return Target(dataset.ids, dataset.images, {"letter": letter_input(dataset)}, labels, {})


def _npz(path: Path, config: DataConfig, form: RowFormat) -> Target:
    npz_study = config.source == "npz"
    names = {"images": config.images, "labels": config.labels} if npz_study else {"images": NPZ_IMAGES,
                                                                                   "labels": NPZ_LABELS}
    hints = ({"images": "data.images", "labels": "data.labels"} if npz_study
             else {"images": "the images to predict", "labels": "optional: their labels"})
    images, labels = image_files.npz_arrays(path, _read_config(config, path, form), names, hints,
                                            labels_required=False)
    return Target(np.arange(len(images)), images, {}, labels, {})


def _csv(frame: Any, path: Path, config: DataConfig, form: RowFormat) -> Target:
    if config.source == "csv":  # like the study's: its label (optional here), side inputs, image paths or pixels
        read = config.model_copy(update={"path": path})
    else:  # pixel columns (and optionally `id` and `label`), as a served model reads them
        read = DataConfig(source="csv", path=path, label=LABEL_ANSWER, resize=config.resize,
                          interpolation=config.interpolation)
    rows = image_files.csv_rows(frame, path, read, labelled=False, channels=form.channels)
    side = {name: image_files.code_side_like(values, form.side[name], path, name) for name, values in rows.side.items()}
    return Target(rows.ids, rows.images, side, rows.labels, rows.side)


def _read_config(config: DataConfig, path: Path, form: RowFormat) -> DataConfig:
    """How to read images to predict: in color if the study's are, resized as the spec says."""
    color = "rgb" if form.channels == 3 else "grayscale"
    return DataConfig(source="folder", path=path, color=color, resize=config.resize,
                      interpolation=config.interpolation)


def _check_shape(path: Path, images: np.ndarray, form: RowFormat) -> None:
    if images.shape[1:] != form.image_shape:
        raise DataError(f"{path}: images are {_size(images.shape[1:])}, but the study's model takes "
                        f"{_size(form.image_shape)}; allowed: images of that size (or data.resize in the spec)")


def _size(shape: tuple[int, ...]) -> str:
    colors = "grayscale" if len(shape) == 2 else "RGB"
    return f"{shape[1]}x{shape[0]} px {colors}"


def _allowed(form: RowFormat) -> str:
    if form.side:
        return f"a csv like the study's, with column(s) {', '.join(form.side)}"
    return (f"a folder of PNG/JPG images (flat or in subfolders), an .npz with an '{NPZ_IMAGES}' array, or a csv "
            "like the study's")
