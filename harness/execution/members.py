"""`predict`'s ensemble members trained side by side: one process per member, `workers` at a time.

Members are independent trainings of one config on every labelled row, and a study's config trains on one
thread (so `run --workers 2` fills 2 cores); trained one after another, K members would leave all cores but one
idle. Each member trains in its own spawned process (the backend is configured before it is imported, as in a
study's worker), saves its model to a file, and the parent loads the files in member order. A member's
weights depend only on its planned run, not on which process trained it or when (tests/training/
test_determinism.py), so the ensemble is the same for any number of workers. One worker trains in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.study.design import PlannedRun
from harness.study.sections import DataConfig


def train_members(members: list[PlannedRun], data: DataConfig, workers: int, train: Any) -> list[Any]:
    """The members' trained Keras models, in member order. `train`: the study's data, already loaded here."""
    if workers == 1 or len(members) == 1:
        return [_trained(member, train) for member in members]
    import keras

    with tempfile.TemporaryDirectory(prefix="harness-members-") as folder, \
            ProcessPoolExecutor(min(workers, len(members)), mp_context=mp.get_context("spawn")) as pool:
        paths = [Path(folder) / f"member-{member.replicate}.keras" for member in members]
        try:
            list(pool.map(partial(_train_to_file, data=data), members, paths))
        except BrokenProcessPool as died:  # killed (out of memory, a signal): no result to report but its end
            raise HarnessError(f"a member's training process ended without a result ({died}); "
                               "nothing was registered, and the same call trains again") from None
        return [keras.saving.load_model(path, compile=False) for path in paths]


def _train_to_file(member: PlannedRun, path: Path, data: DataConfig) -> None:
    """In a spawned process: configure the backend, load the data, train the member, save its model."""
    from harness.training import determinism
    from harness.training.sources import load_study_data

    determinism.configure_process(member.config.determinism, member.config.backend)
    _trained(member, load_study_data(data)).save(path)


def _trained(member: PlannedRun, train: Any) -> Any:
    from harness.execution.prepared import CACHE_DIR
    from harness.training import checkpoint
    from harness.training.train import train_run

    # a member cut short (Ctrl-C, a killed process) resumes from its checkpoint when predict is run again
    folder = CACHE_DIR.parent / checkpoint.FOLDER
    result = train_run(member, train.ids, train.digits, partial(train.images_for, cache_dir=CACHE_DIR),
                       keep_model=True, side=train.side, n_classes=train.n_classes, checkpoints=folder)
    if not result.out_of_memory:
        checkpoint.discard(folder, member.run_key)
    if result.status != "FINISHED":
        raise HarnessError(f"ensemble member {member.replicate} failed to train: {result.failure_reason}")
    return result.model
