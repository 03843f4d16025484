"""A study's training data, whatever its source: images, labels and the fingerprint that keys runs and cache.

`spec.data` names the source; everything downstream (planning, training, the preprocessing cache, workers on
other machines checking they see the same data) uses only the `StudyData` built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.study.spec import DataConfig
from harness.training import preprocess


@dataclass(frozen=True)
class StudyData:
    ids: np.ndarray
    digits: np.ndarray
    images: np.ndarray
    fingerprint: str

    def images_for(self, stage: Any, cache_dir: Path) -> np.ndarray:
        """A stage's preprocessed images, from the disk cache (computed once per data set and pipeline)."""
        return preprocess.cached_pipeline(self.images, self.fingerprint, stage.steps, cache_dir)[0]


def load_study_data(config: DataConfig) -> StudyData:
    """The embedded synthetic set, or a contest train file the spec points at."""
    if config.source == "synthetic":
        from harness.training.synthetic import synthesize

        dataset = synthesize(config.n, config.seed)
    else:
        from harness.training.data import load_contest_csv

        dataset = load_contest_csv(config.path)
        if dataset.digits is None:
            raise DataError(f"{config.path}: training needs a 'digit' column (a contest train file)")
    return StudyData(dataset.ids, dataset.digits, dataset.images, dataset.fingerprint)
