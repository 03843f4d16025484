"""A study ready to train: spec + data + planned runs, every input check done, nothing yet in the store.

`run`, `tune`, `preview` and the workers all start here, so bad input (spec, data file, splits, preprocessing)
is refused the same way everywhere, before any process starts or any store is written.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from dataclasses import dataclass

import numpy as np

from harness import tracking
from harness.errors import DataError, HarnessError, SpecError
from harness.study.builders import check_sources
from harness.study.design import PlannedRun, plan_runs
from harness.study.pipeline import pipeline_key
from harness.study.spec import StudySpec
from harness.training.sources import StudyData, load_study_data

CACHE_DIR = tracking.STORE_DIR / "cache"
MIN_VALIDATION = 20


@dataclass(frozen=True)
class Study:
    """A validated study, ready to train: nothing of it has touched the store yet."""

    spec: StudySpec
    data: StudyData
    runs: list[PlannedRun]
    environments: dict[str, dict[str, str]]  # backend → this machine's kernel environment, part of the run keys


def prepare(spec: StudySpec) -> Study:
    from harness import env
    from harness.study.design import study_backends

    check_sources(spec)  # before the data loads: a typo in a builder file answers at once
    study_data = load_study_data(spec.data)
    environments = {backend: env.kernel_environment(backend) for backend in study_backends(spec)}
    runs = plan_runs(spec, study_data.fingerprint, study_data.images.shape[1], environments)
    check_splits(runs, study_data.digits, spec)
    check_user_models(runs, study_data)
    return Study(spec, study_data, runs, environments)


def check_user_models(runs: list[PlannedRun], data: StudyData) -> None:
    """Check each distinct user model before anything is stored: a one-line SpecError for a builder that cannot be
    imported, raises, exits, kills its process, or returns no model or one of the wrong shape.

    The file is read first, here (syntax, missing imports, the builder's name: no Keras, instant). Then each model is
    built at the shape its first stage feeds it, in a child so that Keras stays out of this process: forked from the
    process server when this command started one (Keras already imported there, while the data loaded), else
    spawned. One build at a time, so a builder that ends its process is named."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from harness.execution.fork_server import PRELOAD_BACKEND, PROCESS_START
    from harness.study.pipeline import output_size
    from harness.training.user_model import check_builders, quiet_stderr

    distinct: dict[tuple[str, tuple[int, ...]], PlannedRun] = {}
    for run in runs:
        if run.config.model.builder:
            height, width, channels = data.input_shape
            steps = run.stages[0].steps
            shape = (output_size(steps, height), output_size(steps, width), channels)
            distinct.setdefault((run.config.model.model_dump_json(), shape), run)
    if not distinct:
        return
    warnings: list[str] = []
    context = mp.get_context(PROCESS_START if PRELOAD_BACKEND in os.environ else "spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=quiet_stderr) as pool:
        for (_, shape), run in distinct.items():
            future = pool.submit(check_builders, [run.config.model], shape, data.n_classes, sorted(data.side),
                                 run.seeds)
            try:
                warnings += future.result()
            except BrokenProcessPool:
                raise SpecError(f"model.builder {run.config.model.builder}: its build ended the process (os._exit, "
                                "a signal or a crash) instead of returning a model; allowed: a builder that "
                                "returns a keras.Model or raises an exception") from None
    for warning in dict.fromkeys(warnings):
        print(warning, file=sys.stderr)


def check_splits(runs: list[PlannedRun], digits: np.ndarray, spec: StudySpec) -> None:
    """Every distinct validation split must exist before anything trains (too few images per class, k > n)."""
    from harness.training.train import split_indices

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
                f"allowed: at least {MIN_VALIDATION} (more data or a larger val_fraction; `all` is for predict)"
            )


def warm_cache(study: Study, runs: list[PlannedRun]) -> None:
    """Preprocess each distinct pipeline once, before any training process starts."""
    seen = set()
    for run in runs:
        for stage in run.stages:
            key = pipeline_key(stage.steps)
            if key not in seen:
                seen.add(key)
                study.data.images_for(stage, CACHE_DIR)


def apply_device(spec: StudySpec) -> None:
    """`device: cpu` hides GPUs from the training processes started after this; `gpu` refuses a GPU-less machine.

    The GPU check imports the backends, so it runs in a child: this process must stay free of them.
    """
    from concurrent.futures import ProcessPoolExecutor

    from harness import devices

    if spec.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif spec.device == "gpu":
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            problems = pool.submit(devices.device_problems, spec).result()
        if problems:
            raise HarnessError(problems[0])
