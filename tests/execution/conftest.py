"""The run queue on a throwaway SQLite storage, with its grace and heartbeat shortened to a second."""

import pytest

from harness.execution import run_queue
from harness.execution import storage as run_storage


@pytest.fixture
def queue(tmp_path, monkeypatch):
    for module in (run_queue, run_storage):
        monkeypatch.setattr(module, "GRACE_S", 1)
        monkeypatch.setattr(module, "HEARTBEAT_S", 1)
    storage = run_queue.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return run_queue.RunQueue.open(storage, "s", create=True)
