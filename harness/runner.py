"""`harness run`: spec → planned runs → training processes → MLflow, then a first answer.

Everything that can reject bad input (spec, data file, factor values, tracking store) runs before anything is
written to the store. Trainings run in child processes, one per distinct process-level determinism setting
(TensorFlow fixes threads and determinism per process); the parent never imports TensorFlow.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import data, engine, preprocess, tracking
from harness.design import PlannedRun, plan_runs
from harness.errors import DataError, HarnessError
from harness.spec import DataConfig, StudySpec

CACHE_DIR = tracking.STORE_DIR / "cache"
MIN_VALIDATION = 20
MAX_REPLACEMENTS_PER_WORKER = 3


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


def apply_device(spec: StudySpec) -> None:
    """`device: cpu` hides GPUs from the training processes started after this; `gpu` refuses a GPU-less machine.

    The GPU check imports the backends, so it runs in a child: this process must stay free of them.
    """
    from concurrent.futures import ProcessPoolExecutor

    from harness import doctor

    if spec.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif spec.device == "gpu":
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            problems = pool.submit(doctor.device_problems, spec).result()
        if problems:
            raise HarnessError(problems[0])


def run_study(study: Study, client: Any, storage: Any, workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """Enqueue every run not yet done, drain the queue with `workers` processes, return the runs table."""
    warm_cache(study, study.runs)  # before the store is touched: a preprocessing error leaves nothing behind
    exp_id = tracking.experiment_id(client, study.spec.name)
    parent_id = tracking.study_parent(client, exp_id, study.spec.name, study.spec.source_text,
                                      str(Path(study.spec.source_path).resolve()))
    queue = engine.open_queue(storage, study.spec.name, create=True)
    for key, value in {
        "spec_text": study.spec.source_text,
        "spec_path": str(Path(study.spec.source_path).resolve()),
        "data_fingerprint": study.data.fingerprint,
        "tracking_uri": client.tracking_uri,
        "experiment_id": exp_id,
        "parent_run_id": parent_id,
    }.items():
        queue.set_user_attr(key, value)
    engine.enqueue(queue, study.runs, tracking.completed_run_keys(client, exp_id))
    try:
        drain(queue, storage.url, client, workers, total=len(study.runs), progress=progress)
    except BaseException as err:  # the parent must not stay RUNNING after an interrupt or a dead worker
        tracking.finish_parent(client, parent_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    tracking.finish_parent(client, parent_id)
    table = tracking.runs_table(client, exp_id)
    keys = {run.run_key for run in study.runs}
    return table[table["run_key"].isin(keys)].reset_index(drop=True) if not table.empty else table


def warm_cache(study: Study, runs: list[PlannedRun]) -> None:
    """Preprocess each distinct pipeline once, before any training process starts."""
    seen = set()
    for run in runs:
        for stage in run.stages:
            key = preprocess.pipeline_key(stage.steps)
            if key not in seen:
                seen.add(key)
                study.data.images_for(stage, CACHE_DIR)


def drain(
    queue: Any, storage_url: str, client: Any, workers: int, total: int | None = None, progress: bool = True
) -> None:
    """Run worker processes, one process group at a time, until no trial is waiting or running.

    TensorFlow fixes threads and determinism per process, so each group (runs sharing those settings) gets its
    own processes. A worker that dies is replaced; its trial is retried once its heartbeat goes stale.
    """
    from tqdm import tqdm

    exp_id = queue.user_attrs["experiment_id"]
    bar = tqdm(total=total, unit="run", desc=queue.study_name, disable=not progress, file=sys.stderr)
    try:
        while groups := engine.group_counts(queue):
            waiting = [group for group, counts in groups.items() if counts["WAITING"]]
            if not waiting:  # only RUNNING trials left: other machines' or dead workers' (stale soon)
                _wait_for_stale(queue, client, exp_id, bar)
                continue
            _run_workers(queue, storage_url, client, list(waiting[0]), workers, bar)
    finally:
        _show_progress(queue, bar)
        bar.close()
    tracking.mark_orphans(client, exp_id, live_trials=set())


def _run_workers(queue: Any, storage_url: str, client: Any, group: list[Any], workers: int, bar: Any) -> None:
    context = mp.get_context("spawn")
    args = (storage_url, queue.study_name, group, client.tracking_uri, CACHE_DIR.resolve())
    processes = [context.Process(target=worker_main, args=args, daemon=True) for _ in range(workers)]
    replacements = MAX_REPLACEMENTS_PER_WORKER * workers
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(1.0)
            _show_progress(queue, bar)
            for i, process in enumerate(processes):
                died = process.exitcode not in (None, 0)
                if died and replacements > 0 and tuple(group) in engine.group_counts(queue):
                    replacements -= 1  # a worker died (killed, out of memory): its trial is retried by the others
                    processes[i] = context.Process(target=worker_main, args=args, daemon=True)
                    processes[i].start()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)  # workers got the same SIGINT: they mark their trial and exit
        raise
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    if any(process.exitcode != 0 for process in processes) and tuple(group) in engine.group_counts(queue):
        codes = sorted({process.exitcode for process in processes})
        raise HarnessError(f"training processes died (exit codes {codes}); run the study again to resume")


def _wait_for_stale(queue: Any, client: Any, exp_id: str, bar: Any) -> None:
    from optuna.trial import TrialState

    time.sleep(engine.HEARTBEAT_S)
    engine.fail_stale(queue)
    live = {t.number for t in queue.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    tracking.mark_orphans(client, exp_id, live)
    _show_progress(queue, bar)


def _show_progress(queue: Any, bar: Any) -> None:
    counts = engine.status(queue)
    bar.n = counts["done"] + counts["failed"]
    bar.set_postfix_str(f"running {counts['running']}, failed {counts['failed']}", refresh=True)


def worker_main(storage_url: str, study_name: str, group: list[Any], tracking_uri: str, cache_dir: Path) -> None:
    """A training process: configure determinism first, then claim and train trials of its group until none."""
    from harness import determinism

    signal.signal(signal.SIGINT, defer_interrupt)
    determinism.configure_group(group)
    try:
        Worker.connect(storage_url, study_name, tracking_uri, cache_dir).loop(group)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def defer_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C in a worker: stop at the end of the current epoch (train.STOP_REQUESTED); a second one at once."""
    from harness.train import STOP_REQUESTED

    STOP_REQUESTED.set()
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class Worker:
    """Everything a training process needs, rebuilt from the run storage alone (so other machines can join)."""

    queue: Any
    client: Any
    study: Study
    cache_dir: Path
    environment: dict[str, Any]
    experiment_id: str
    parent_id: str

    @classmethod
    def connect(cls, storage_url: str, study_name: str, tracking_uri: str | None, cache_dir: Path) -> Worker:
        from harness import env
        from harness.spec import parse_spec

        queue = engine.open_queue(engine.open_storage(storage_url), study_name, create=False)
        attrs = queue.user_attrs
        client = tracking.connect(tracking_uri or attrs["tracking_uri"])
        study = prepare(parse_spec(attrs["spec_text"], Path(attrs["spec_path"])))
        if study.data.fingerprint != attrs["data_fingerprint"]:
            raise HarnessError(
                f"data here (fingerprint {study.data.fingerprint}) differs from the study's "
                f"({attrs['data_fingerprint']}); point the spec at the same files"
            )
        return cls(queue, client, study, cache_dir, env.snapshot(), attrs["experiment_id"], attrs["parent_run_id"])

    def loop(self, group: list[Any]) -> None:
        from optuna.trial import TrialState

        from harness.train import STOP_REQUESTED

        runs = {run.run_key: run for run in self.study.runs}
        while True:
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            trial = engine.claim(self.queue, group)
            if trial is None:
                if tuple(group) not in engine.group_counts(self.queue):
                    return
                time.sleep(engine.HEARTBEAT_S)  # others are still training: a dead one's trial comes back
                engine.fail_stale(self.queue)
                continue
            run = runs.get(trial.user_attrs[engine.RUN_KEY])
            if run is None:
                trial.set_user_attr(engine.REAL_FAILURE, "run key not in the study's current spec")
                self.queue.tell(trial, state=TrialState.FAIL)
                continue
            self.execute(trial, run)

    def execute(self, trial: Any, run: PlannedRun) -> None:
        from optuna.trial import TrialState

        from harness.train import train_run

        with engine.heartbeat(trial):
            run_id = tracking.start_child(
                self.client, self.experiment_id, self.parent_id, run, self.environment, trial.number
            )
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                result = train_run(run, self.study.data.ids, self.study.data.digits, self.images_for)
                tracking.finish_child(self.client, run_id, result)
            except KeyboardInterrupt:
                tracking.end_child(self.client, run_id, "KILLED", "interrupted (Ctrl-C); rerun to resume")
                self.queue.tell(trial, state=TrialState.FAIL)
                raise
        if result.status == "FINISHED":
            self.queue.tell(trial, result.accuracy)
        else:
            trial.set_user_attr(engine.REAL_FAILURE, result.failure_reason)
            self.queue.tell(trial, state=TrialState.FAIL)

    def images_for(self, stage: Any) -> np.ndarray:
        return self.study.data.images_for(stage, self.cache_dir)
