"""A study's training data, whatever its source: images, labels and the fingerprint that keys runs and cache.

`spec.data` names the source; everything downstream (planning, training, the preprocessing cache, workers on
other machines checking they see the same data) uses only the `StudyData` built here. Side inputs (per-row
values such as the contest's letter) reach a user model whose builder declares an input of the same name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.study.sections import DataConfig
from harness.training import preprocess

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True)
class StudyData:
    ids: np.ndarray
    digits: np.ndarray  # class index per row, 0..n_classes-1 (digits for the contest and synthetic sets)
    images: np.ndarray  # uint8 (N, S, S) grayscale or (N, S, S, 3) RGB
    fingerprint: str
    side: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, 1) array
    classes: tuple[str, ...] = DIGIT_CLASSES  # class index -> name
    # a categorical side input's values in code order (predict codes its file by them); numeric ones are absent
    side_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one image as the model gets it (without the batch axis): (S, S, channels)."""
        return (*self.images.shape[1:3], 1 if self.images.ndim == 3 else self.images.shape[3])

    def images_for(self, stage: Any, cache_dir: Path) -> np.ndarray:
        """A stage's preprocessed images, from the disk cache (computed once per data set and pipeline)."""
        return preprocess.cached_pipeline(self.images, self.fingerprint, stage.steps, cache_dir)[0]


def load_study_data(config: DataConfig) -> StudyData:
    """The embedded synthetic set, scikit-learn's digits, a contest train file, or the user's own images."""
    if config.source == "synthetic" or (config.source == "csv" and config.label is None):
        return _contest_format(config)
    if config.source == "digits":
        return bundled_digits(config)
    from harness.training import image_files

    loaders = {"folder": image_files.load_folder, "npz": image_files.load_npz, "csv": image_files.load_generic_csv}
    images, labels, side = loaders[config.source](config)
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{config.path}: every image has label '{classes[0]}'; allowed: at least 2 classes")
    return user_data(images, codes.astype(np.int64), tuple(str(c) for c in classes), side)


def bundled_digits(config: DataConfig) -> StudyData:
    """scikit-learn's 1,797 handwritten 8x8 digits (grey levels 0..16 scaled to 0..255), shipped with the package."""
    from sklearn.datasets import load_digits

    from harness.training.image_files import resize

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack([resize(image, config) for image in images])
    return user_data(images, bunch.target.astype(np.int64), DIGIT_CLASSES, {})


def user_data(images: np.ndarray, codes: np.ndarray, classes: tuple[str, ...],
              side: dict[str, np.ndarray]) -> StudyData:
    """StudyData with a content fingerprint over images, labels, class names and side inputs (`side`: each
    column as read, coded here as a model gets it)."""
    from harness.training.image_files import code_side

    coded = {name: code_side(values) for name, values in side.items()}
    side = {name: array for name, (array, _) in coded.items()}
    categories = {name: found for name, (_, found) in coded.items() if found is not None}
    digest = hashlib.sha256(f"user-data-v1 {images.shape} {classes!r};".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(codes, dtype="<i8").tobytes())
    for name in sorted(side):
        digest.update(f"{name} {side[name].dtype};".encode())
        digest.update(np.ascontiguousarray(side[name]).tobytes())
    for array in (images, codes, *side.values()):
        array.setflags(write=False)
    ids = np.arange(len(images), dtype=np.int64)
    return StudyData(ids, codes, images, digest.hexdigest()[:16], side, classes, categories)


def _contest_format(config: DataConfig) -> StudyData:
    from harness.training.data import letter_input

    if config.source == "synthetic":
        from harness.training.synthetic import synthesize

        dataset = synthesize(config.n, config.seed)
    else:
        from harness.training.data import load_contest_csv

        dataset = load_contest_csv(config.path)
        if dataset.digits is None:
            raise DataError(f"{config.path}: training needs a 'digit' column (a contest train file)")
    return StudyData(dataset.ids, dataset.digits, dataset.images, dataset.fingerprint,
                     {"letter": letter_input(dataset)})
