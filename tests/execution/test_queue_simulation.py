"""Eight simulated workers on one queue (benchmarks/sim_queue.py, short): every run exactly once, none lost.

The trainings are sleeps, the queue and the MLflow logging are the real code; PostgreSQL + `mlflow server` are
started here when Debian's PostgreSQL binaries are installed, SQLite always.
"""

from contextlib import ExitStack

import pytest

from benchmarks import services
from benchmarks.sim_queue import simulate, stores


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_eight_workers_claim_every_run_exactly_once(kind, tmp_path):
    if kind == "postgresql" and services.postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with ExitStack() as stack:
        storage, tracking = stores(kind, stack, tmp_path, mlflow_workers=2)
        figures = simulate(storage, tracking, n_workers=8, trainings=24, train_s=0.05, epochs=3, n_predictions=50)
    assert figures["first_error"] == ""
    assert (figures["trained"], figures["duplicated"], figures["lost"]) == (24, 0, 0)
    assert figures["mlflow_calls_per_training"] == pytest.approx(6.0)  # create, params, metrics, 2 artifacts, end
