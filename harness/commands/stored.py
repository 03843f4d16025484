"""A finished study as the report sees it: found by spec file or by name in the MLflow store.

Keeps `report` and `export` free of MLflow details; the MLflow calls themselves live in `tracking`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import tracking
from harness.errors import HarnessError
from harness.study.spec import StudySpec, load_spec


@dataclass(frozen=True)
class StoredStudy:
    name: str
    client: Any
    experiment_id: str
    spec: StudySpec | None

    def runs_table(self, predictions_dir: Path) -> pd.DataFrame:
        """The study's runs (predictions downloaded into predictions_dir), or an error if there are none.

        Given a spec, only the runs it plans: an edited spec shares its experiment with earlier versions, whose
        runs would otherwise enter the statistics under the same factor labels. `attrs["left_out"]` counts them.
        """
        table = tracking.runs_table(self.client, self.experiment_id, predictions_dir=predictions_dir.resolve())
        planned = self._planned_runs()
        if planned is not None and "config_key" in table:
            current = table["config_key"].isin({run.config_key for run in planned})
            left_out = int((~current).sum())
            table = table.loc[current].reset_index(drop=True)
            table.attrs["left_out"] = left_out
            levels = {run.config_key: run.factors for run in planned}
            for factor in dict.fromkeys(f for run in planned for f in run.factors):
                # a run reused after the spec gained a factor was logged without its level: the plan knows it
                table[factor] = [levels[key].get(factor, "") for key in table["config_key"]]
            base = {run.config_key for run in planned if run.base_point}
            if base:  # the spec names its base config, also for runs logged before they carried the tag
                table["base_point"] = np.where(table["config_key"].isin(base), "true", "")
        if table.empty:
            raise HarnessError(f"study '{self.name}' has no training runs in {self.client.tracking_uri}"
                               + (" planned by this version of its spec" if planned is not None else ""))
        return table

    def _planned_runs(self) -> list[Any] | None:
        """The runs the spec at hand plans, matched by config key (run keys also hold the environment, and a
        report may be read on another machine); None by study name or for a search (its trials are not planned)."""
        if self.spec is None or self.spec.search is not None:
            return None
        from harness.study.design import plan_runs

        return plan_runs(self.spec, self._data.fingerprint, self._data.images.shape[1])

    @cached_property
    def _data(self) -> Any:
        from harness.training.sources import load_study_data

        return load_study_data(self.spec.data)

    def images(self) -> dict[int, np.ndarray] | None:
        """Raw images by id for the flipped-images grid; only known when the spec (and its data) is at hand."""
        if self.spec is None:
            return None
        return dict(zip(self._data.ids.tolist(), self._data.images, strict=True))

    def attach_report(self, out_dir: Path, table: pd.DataFrame | None = None) -> None:
        """The report folder as artifacts of the study's parent run, with `table` (what it read) as runs.csv."""
        if table is not None:
            write_runs_csv(table, Path(out_dir) / "runs.csv")
        tracking.attach_report(self.client, self.experiment_id, out_dir)


def write_runs_csv(table: pd.DataFrame, path: Path) -> None:
    """The runs table as CSV, prediction paths relative to its folder (so `report --runs` reads it in place)."""
    from harness.files import write_atomic

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
    client = tracking.connect(tracking_uri or (spec.tracking.uri if spec else None), create=False)
    exp_id = tracking.experiment_id(client, name, create=False)
    if exp_id is None:
        raise HarnessError(f"no study named '{name}' in {client.tracking_uri}; run it first with `harness run`")
    return StoredStudy(name, client, exp_id, spec)


def _relative(path: object, base: Path) -> str:
    if not isinstance(path, str) or not path:
        return ""
    return str(Path(path).relative_to(base)) if Path(path).is_relative_to(base) else path
