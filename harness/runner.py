"""`harness run`: spec → planned runs → training processes → MLflow, then a first answer.

Everything that can reject bad input (spec, data file, factor values, tracking store) runs before anything is
written to the store. Trainings run in child processes, one per distinct process-level determinism setting
(TensorFlow fixes threads and determinism per process); the parent never imports TensorFlow.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import data, preprocess, tracking
from harness.design import PlannedRun, plan_runs, process_key
from harness.errors import DataError, HarnessError
from harness.spec import DataConfig, StudySpec

CACHE_DIR = tracking.STORE_DIR / "cache"
MIN_VALIDATION = 20


@dataclass(frozen=True)
class StudyData:
    ids: np.ndarray
    digits: np.ndarray
    images: np.ndarray
    fingerprint: str


def load_study_data(config: DataConfig) -> StudyData:
    """The embedded synthetic set, or a contest train file the spec points at."""
    if config.source == "synthetic":
        dataset = data.synthesize(config.n, config.seed)
    else:
        dataset = data.load_contest_csv(config.path)
        if dataset.digits is None:
            raise DataError(f"{config.path}: training needs a 'digit' column (a contest train file)")
    return StudyData(dataset.ids, dataset.digits, dataset.images, data.fingerprint(dataset))


@dataclass(frozen=True)
class Study:
    """A validated study, ready to train: nothing of it has touched the store yet."""

    spec: StudySpec
    data: StudyData
    runs: list[PlannedRun]


def prepare(spec: StudySpec) -> Study:
    study_data = load_study_data(spec.data)
    runs = plan_runs(spec, study_data.fingerprint)
    _check_splits(runs, study_data.digits, spec)
    return Study(spec, study_data, runs)


def _check_splits(runs: list[PlannedRun], digits: np.ndarray, spec: StudySpec) -> None:
    """Every distinct validation split must exist before anything trains (too few images per class, k > n)."""
    from harness.train import split_indices

    checked = set()
    for run in runs:
        evaluation, seed = run.config.evaluation, run.seeds["split"]
        if (evaluation, seed) in checked:
            continue
        checked.add((evaluation, seed))
        try:
            _, val_idx = split_indices(digits, evaluation, seed)
        except ValueError as err:
            raise DataError(
                f"{spec.source_path}: evaluation {evaluation.method} cannot split "
                f"{len(digits)} images: {' '.join(str(err).split())}"
            ) from None
        if len(val_idx) < MIN_VALIDATION:
            raise DataError(
                f"{spec.source_path}: evaluation leaves {len(val_idx)} validation images; "
                f"allowed: at least {MIN_VALIDATION} (more data or a larger val_fraction)"
            )


def run_study(study: Study, client: Any, progress: bool = True) -> pd.DataFrame:
    """Train every run not already completed in the store (a connected MlflowClient); return its runs table."""
    from tqdm import tqdm

    _warm_cache(study, study.runs)  # before the store is touched: a preprocessing error leaves nothing behind
    exp_id = tracking.experiment_id(client, study.spec.name)
    tracking.mark_interrupted(client, exp_id)
    completed = tracking.completed_run_keys(client, exp_id)
    pending = [run for run in study.runs if run.run_key not in completed]
    parent_id = tracking.study_parent(client, exp_id, study.spec.name, study.spec.source_text)
    groups: dict[tuple, list[PlannedRun]] = defaultdict(list)
    for run in pending:
        groups[process_key(run)].append(run)
    bar = tqdm(
        total=len(study.runs),
        initial=len(study.runs) - len(pending),
        unit="run",
        desc=study.spec.name,
        disable=not progress,
        file=sys.stderr,
    )
    try:
        for group in groups.values():
            _run_group(group, study.data, client.tracking_uri, exp_id, parent_id, bar)
    except BaseException as err:  # the parent must not stay RUNNING after an interrupt or a dead worker
        tracking.finish_parent(client, parent_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        bar.close()
    tracking.finish_parent(client, parent_id)
    table = tracking.runs_table(client, exp_id)
    keys = {run.run_key for run in study.runs}
    return table[table["run_key"].isin(keys)].reset_index(drop=True) if not table.empty else table


def _warm_cache(study: Study, runs: list[PlannedRun]) -> None:
    """Preprocess each distinct pipeline once, before any training process starts."""
    seen = set()
    for run in runs:
        for stage in run.stages:
            key = preprocess.pipeline_key(stage.steps)
            if key not in seen:
                seen.add(key)
                preprocess.cached_pipeline(study.data.images, study.data.fingerprint, stage.steps, CACHE_DIR)


def _run_group(runs: list[PlannedRun], study_data: StudyData, uri: str, exp_id: str, parent_id: str, bar: Any) -> None:
    """One training process for runs sharing process-level settings; progress comes back on a queue."""
    context = mp.get_context("spawn")
    messages = context.Queue()
    worker = context.Process(
        target=worker_main,
        args=(runs, study_data, CACHE_DIR.resolve(), uri, exp_id, parent_id, messages),
        daemon=True,
    )
    worker.start()
    remaining = len(runs)
    try:
        while remaining:
            try:
                message = messages.get(timeout=1.0)
            except queue.Empty:
                if not worker.is_alive():
                    raise HarnessError(
                        f"training process died (exit code {worker.exitcode}); run the study again to resume"
                    ) from None
                continue
            remaining -= 1
            bar.set_postfix_str(f"last acc={message['accuracy']:.3f} {message['status'].lower()}")
            bar.update(1)
        worker.join()
    finally:
        if worker.is_alive():
            worker.terminate()
            worker.join()


def worker_main(
    runs: list[PlannedRun],
    study_data: StudyData,
    cache_dir: Path,
    uri: str,
    exp_id: str,
    parent_id: str,
    messages: Any,
) -> None:
    """Entry point of a training process: configure determinism first, then train and log each run."""
    from harness import determinism, env
    from harness.train import train_run

    determinism.configure_process(runs[0].config.determinism)
    client = tracking.connect(uri)
    environment = env.snapshot()
    loaded: dict[str, np.ndarray] = {}

    def images_for(stage: Any) -> np.ndarray:
        key = preprocess.pipeline_key(stage.steps)
        if key not in loaded:
            loaded[key], _ = preprocess.cached_pipeline(
                study_data.images, study_data.fingerprint, stage.steps, cache_dir
            )
        return loaded[key]

    for run in runs:
        result = train_run(run, study_data.ids, study_data.digits, images_for)
        tracking.log_result(client, exp_id, parent_id, result, environment)
        messages.put(
            {
                "run_key": run.run_key,
                "status": result.status,
                "accuracy": result.accuracy,
                "failure_reason": result.failure_reason,
            }
        )
