"""A finished study as the report sees it: found by spec file or by name in the MLflow store.

Keeps `report` and `export` free of MLflow details; the MLflow calls themselves live in `tracking`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import tracking
from harness.errors import HarnessError
from harness.spec import StudySpec, load_spec


@dataclass(frozen=True)
class StoredStudy:
    name: str
    client: Any
    experiment_id: str
    spec: StudySpec | None

    def runs_table(self, predictions_dir: Path) -> pd.DataFrame:
        """The study's runs (predictions downloaded into predictions_dir), or an error if there are none."""
        table = tracking.runs_table(self.client, self.experiment_id, predictions_dir=predictions_dir.resolve())
        if table.empty:
            raise HarnessError(f"study '{self.name}' has no training runs in {self.client.tracking_uri}")
        return table

    def images(self) -> dict[int, np.ndarray] | None:
        """Raw images by id for the flipped-images grid; only known when the spec (and its data) is at hand."""
        if self.spec is None:
            return None
        from harness.runner import load_study_data

        data = load_study_data(self.spec.data)
        return dict(zip(data.ids.tolist(), data.images, strict=True))

    def attach_report(self, out_dir: Path, table: pd.DataFrame | None = None) -> None:
        """The report folder as artifacts of the study's parent run, with `table` (what it read) as runs.csv."""
        if table is not None:
            write_runs_csv(table, Path(out_dir) / "runs.csv")
        tracking.attach_report(self.client, self.experiment_id, out_dir)


def write_runs_csv(table: pd.DataFrame, path: Path) -> None:
    """The runs table as CSV, prediction paths relative to its folder (so `report --runs` reads it in place)."""
    from harness.report import write_atomic

    base = path.parent.resolve()
    out = table.copy()
    if "predictions" in out:
        out["predictions"] = [_relative(p, base) for p in out["predictions"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, out.to_csv(index=False))


def open_study(study: str, tracking_uri: str | None) -> StoredStudy:
    """`study` is a spec file (its name and tracking URI are used) or a study name."""
    spec = load_spec(study) if study.endswith((".yaml", ".yml")) or Path(study).is_file() else None
    name = spec.name if spec else study
    client = tracking.connect(tracking_uri or (spec.tracking.uri if spec else None))
    exp_id = tracking.experiment_id(client, name, create=False)
    if exp_id is None:
        raise HarnessError(f"no study named '{name}' in {client.tracking_uri}; run it first with `harness run`")
    return StoredStudy(name, client, exp_id, spec)


def _relative(path: object, base: Path) -> str:
    if not isinstance(path, str) or not path:
        return ""
    return str(Path(path).relative_to(base)) if Path(path).is_relative_to(base) else path
