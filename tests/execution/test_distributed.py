"""One study, several worker processes, one shared run storage and tracking server: every run exactly once,
even when both servers restart mid-study.

PostgreSQL (Debian's server binaries) and `mlflow server` are started here on loopback ports, for real. Skips
when PostgreSQL's binaries are not installed. Two workers on the SQLite default are covered by the crash and
chaos tests.
"""

import os
import subprocess
import sys
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from benchmarks import services
from harness.execution import storage as run_storage
from tests.conftest import REPO, run_cli

SPEC = """
name: shared
data: {source: synthetic, n: 200, seed: 0}
repeats: 6
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 2}}
"""


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a loopback port with databases `optuna` and `mlflow`."""
    if services.postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with services.postgres() as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on loopback, backed by the PostgreSQL above, serving artifacts from a temp folder."""
    with services.mlflow_server(f"{postgres}/mlflow", tmp_path_factory.mktemp("artifacts")) as url:
        yield url


def check_exactly_once(tracking_uri: str, storage: str) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("shared")
    children = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'training'")
    finished = Counter(r.data.tags["harness.run_key"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == 6 and set(finished.values()) == {1}
    workers = {r.data.tags["harness.worker"] for r in children}
    # both workers trained; a third appears when an outage outlasts a worker's retries (it gives its trial back,
    # exits 2 and is replaced), which a loaded machine makes likely
    assert len(workers) >= 2, f"expected runs from at least 2 worker processes, got {workers}"
    for run in children:  # finished runs are fully logged; a given-back run ends KILLED and says why
        status, reason = run.info.status, run.data.tags.get("harness.failure_reason", "")
        if status == "FINISHED":
            assert "predictions.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_id
        else:
            assert status == "KILLED" and reason, f"{run.info.run_id}: {status}, reason {reason!r}"
    queue = optuna.load_study(study_name="shared", storage=storage)
    complete = Counter(t.user_attrs["run_key"] for t in queue.trials if t.state == TrialState.COMPLETE)
    assert complete == finished and len(queue.trials) == 6


def count_complete(storage: object) -> int:
    try:
        return len(optuna.load_study(study_name="shared", storage=storage).get_trials(states=(TrialState.COMPLETE,)))
    except Exception:  # noqa: BLE001 -- not created yet, or the server is restarting under us
        return -1


@pytest.mark.slow
def test_two_workers_ride_out_restarts_of_postgresql_and_the_mlflow_server(tmp_path, postgres, mlflow_server):
    """Each server is restarted (sessions cut, port closed for seconds) while two workers train: the workers
    reconnect (SQLAlchemy pre-ping plus backoff, MLflow's HTTP retries) and every run ends exactly once. A
    `harness worker` joining afterwards (another machine) finds nothing left to do."""
    (tmp_path / "shared.yaml").write_text(SPEC.replace("epochs: 2", "epochs: 4"))
    storage = run_storage.open_storage(f"{postgres}/optuna")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    study = subprocess.Popen([sys.executable, "-m", "harness", "run", "shared.yaml", "--no-progress", "--workers", "2",
                              "--storage", f"{postgres}/optuna", "--tracking-uri", mlflow_server],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        done_at_restart = []
        for server, after in ((postgres, 1), (mlflow_server, 2)):
            services.wait_until(lambda n=after: count_complete(storage) >= n or study.poll() is not None,
                                "runs to finish", 300)
            if study.poll() is not None:
                ended = f"the study ended (exit {study.returncode}) before the restart"
                pytest.fail(f"{ended}: {study.stderr.read()[-3000:]}")
            done_at_restart.append(count_complete(storage))
            services.restart(server)
        out, err = study.communicate(timeout=600)
    finally:
        study.kill()
    assert study.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]  # no worker crashed: each rode the outage out or gave its trial back
    assert done_at_restart[-1] < 6, "no run was left to train after the restarts"
    check_exactly_once(mlflow_server, f"{postgres}/optuna")
    joined = run_cli("worker", "--study", "shared", "--storage", f"{postgres}/optuna", "--no-progress", cwd=tmp_path,
                     timeout=300)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "6 done, 0 running on 0 live worker(s), 0 waiting" in joined.stdout


def test_a_query_the_database_cuts_mid_flight_is_retried_on_a_new_connection(postgres):
    """The window a server restart leaves: a query is running when its session is terminated. A lock holds a
    storage call inside its query while the test terminates that session; the call must still answer."""
    import threading

    import psycopg

    storage = run_storage.open_storage(f"{postgres}/optuna")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "cut-mid-query")
    url = f"{postgres}/optuna"
    with psycopg.connect(url) as locker, psycopg.connect(url, autocommit=True) as admin:
        locker.execute("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")
        answers: list[object] = []
        call = threading.Thread(target=lambda: answers.append(_answer_or_error(storage.get_all_trials, study_id)))
        call.start()
        blocked = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = 'optuna'"
        services.wait_until(lambda: admin.execute(blocked).fetchall(), "the storage call to wait on the lock", 30)
        for (pid,) in admin.execute(blocked).fetchall():
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        locker.rollback()  # the lock goes; a retried call now runs through
        call.join(timeout=60)
    assert answers == [[]], answers


def _answer_or_error(method, *args):
    try:
        return method(*args)
    except Exception as err:  # noqa: BLE001 -- the test reports what the call raised
        return repr(err)


def test_worker_on_unreachable_storage_is_one_line(tmp_path):
    done = run_cli("worker", "--study", "x", "--storage", "postgresql://nobody@127.0.0.1:9/x", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unreachable" in done.stderr


def test_worker_without_storage_joins_local_run_storage_or_says_there_is_none(tmp_path):
    done = run_cli("worker", "--study", "x", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no run storage at sqlite:///" in done.stderr and "harness run" in done.stderr
    assert not (tmp_path / "mlruns").exists()
