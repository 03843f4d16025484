"""Every Optuna internal the run queue relies on (run_queue.RunQueue, reconnecting.py), exercised against the
installed Optuna: an upgrade that changes one fails here, by name, instead of as a hang or a run trained twice
somewhere in a study. The range pyproject allows is the one these pins hold for."""

import inspect
import time
import tomllib
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from packaging.requirements import Requirement

from harness.execution import reconnecting, run_queue
from harness.execution import storage as run_storage
from tests.conftest import REPO

GROUP = ["tensorflow", True, True, 0, 0, False]


@pytest.fixture
def queue(tmp_path, monkeypatch):
    for module in (run_queue, run_storage):
        monkeypatch.setattr(module, "GRACE_S", 1)
    storage = run_queue.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return run_queue.RunQueue.open(storage, "pins", create=True)


def test_the_installed_optuna_is_in_the_range_pyproject_allows():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    allowed = next(Requirement(d) for d in dependencies if Requirement(d).name == "optuna")
    assert allowed.specifier.contains(optuna.__version__), (optuna.__version__, str(allowed.specifier))


def test_the_storage_methods_wrapped_for_retries_exist_with_the_signatures_used():
    base = optuna.storages.RDBStorage
    for name in reconnecting.RETRIED_AS_THEY_ARE:
        assert callable(getattr(base, name, None)), name
    assert list(inspect.signature(base._create_new_trial).parameters) == ["self", "study_id", "template_trial"]
    assert list(inspect.signature(base._get_prepared_new_trial).parameters) == [
        "self", "study_id", "template_trial", "session"]
    from optuna.storages._rdb import models

    assert {"trial_id", "key", "value_json"} <= set(models.TrialSystemAttributeModel.__table__.columns.keys())
    assert "study_id" in models.TrialModel.__table__.columns.keys()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_study_creates_trials_through_the_private_calls_the_storage_wraps(queue):
    """`_CachedStorage` (what `create_study` wraps an RDBStorage in) creates trials with `_create_new_trial`,
    which calls `_get_prepared_new_trial`: the token proves both ran through reconnecting.py."""
    asked = queue.study.ask()  # before the enqueue: `ask` takes a WAITING trial where there is one
    queue.enqueue([SimpleNamespace(run_key="a", config=run_queue_config())], set())
    tokens = {t.system_attrs.get(reconnecting.CREATION_TOKEN) for t in queue.trials()}
    assert len(tokens) == 2 and None not in tokens and asked.number == 0


def test_storage_ids_the_claim_and_the_stale_sweep(queue):
    """FrozenTrial._trial_id, Study._storage/_study_id, optuna.Trial(study, id), the WAITING → RUNNING transition
    that refuses a second claim, heartbeat rows, `_get_stale_trial_ids`, and the retry history."""
    queue.enqueue([SimpleNamespace(run_key="a", config=run_queue_config())], set())
    (trial_id,) = queue.waiting(GROUP)
    assert queue.study._storage.get_trial(trial_id).number == queue.trials()[0].number
    trial = queue.take(trial_id)
    assert isinstance(trial, optuna.Trial) and trial._trial_id == trial_id and trial.number == 0
    assert queue.study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING) is False
    assert queue.take(trial_id) is None
    time.sleep(run_queue.GRACE_S + 1)
    assert queue.study._storage._get_stale_trial_ids(queue.study._study_id) == [trial_id]
    assert queue.status()["stale"] == 1
    queue.fail_stale()
    (retry_id,) = queue.waiting(GROUP)
    retry = queue.take(retry_id)
    assert queue.is_retry(retry) and queue.retries_left(retry)
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(queue._frozen(retry)) == [0]


def test_a_running_trial_without_a_heartbeat_row_is_never_stale_to_optuna(queue):
    """Why `RunQueue.take` beats before it claims (a worker killed in between hung `harness run`); if a later
    Optuna counts such a trial stale itself, the early beat is merely redundant."""
    queue.enqueue([SimpleNamespace(run_key="a", config=run_queue_config())], set())
    (trial_id,) = queue.waiting(GROUP)
    assert queue.study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    time.sleep(run_queue.GRACE_S + 1)
    assert queue.study._storage._get_stale_trial_ids(queue.study._study_id) == []


def run_queue_config():
    from harness.study.spec import RunConfig

    return RunConfig()
