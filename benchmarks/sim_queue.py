"""Many machines, simulated: N worker processes pull one study's queue and log to one MLflow store.

A training is replaced by a timed sleep and a synthetic result of realistic size (per-epoch metrics, a predictions
CSV), so 100 workers fit on 2 cores; everything else is the real code path: `claims.Claimer` on the Optuna
storage, heartbeats, `tracking.start_child` / `finish_child`, `RunQueue.complete`. Against a real PostgreSQL and a real
`mlflow server` on loopback (started here), or SQLite files for contrast.

    python benchmarks/sim_queue.py --store postgresql --workers 8 32 100 --trainings 2000
    python benchmarks/sim_queue.py --store sqlite --workers 4 8 16 --trainings 400

Prints per N: claims/s, claim latency (median, p99), duplicated and lost runs (must be 0), MLflow calls per
training and the calls/s the tracking store served, and the first error a worker saw, if any.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import services  # noqa: E402

SPEC = """name: sim
repeats: {repeats}
base: {{stages: {{train: {{pipeline: [], epochs: {epochs}}}}}}}
factors: {{model.filters: [8, 16, 24, 32]}}
"""
ENVIRONMENT = {"python": "3", "keras": "3", "keras_backend": "tensorflow", "git_commit": "sim"}


class CountingClient:
    """An MlflowClient that counts the calls the harness makes through it (one call = one or more requests)."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attribute(*args, **kwargs)

        return counted


def fake_result(run: Any, epochs: int, n_predictions: int, seconds: float, rng: np.random.Generator) -> Any:
    """What `train_run` returns for a finished run, with the sizes a real one has."""
    import pandas as pd

    from harness.training.train import RunResult

    history = [{"epoch": e + 1, "stage": "train", "epoch_time_s": seconds / epochs, "loss": 1.0 / (e + 1),
                "accuracy": 0.5, "val_loss": 1.1 / (e + 1), "val_accuracy": 0.5} for e in range(epochs)]
    labels = rng.integers(0, 10, n_predictions)
    predictions = pd.DataFrame({"id": np.arange(n_predictions), "label": labels, "pred": labels})
    return RunResult(run, "FINISHED", accuracy=float(rng.uniform(0.7, 0.9)), loss=0.5, weights_hash="0" * 64,
                     wall_time_s=seconds, history=history, predictions=predictions)


MAX_FAILED_TRAININGS = 3  # a real worker that dies is replaced 3 times per worker slot (runner.MAX_REPLACEMENTS_...)


def worker_loop(storage_url: str, tracking_uri: str, train_s: float, epochs: int, n_predictions: int,
                out: Any) -> None:
    """One simulated worker: claim, 'train' (sleep), log, tell, until no trial of its group waits or runs.

    A training whose logging fails is retried as a real worker's would be (that worker dies, is replaced, and
    its trial is retried once its heartbeat is stale; here the retry is immediate), and a retried trial whose
    run MLflow already holds as FINISHED is not logged again (`GroupWorker.logged_before`)."""
    from harness import tracking
    from harness.execution import claims, run_queue
    from harness.study.design import plan_runs, process_key
    from harness.study.spec import parse_spec

    report: dict[str, Any] = {"latencies": [], "trials": [], "errors": [], "calls": 0, "pid": os.getpid()}
    try:
        queue = run_queue.RunQueue.open(run_queue.open_storage(storage_url), "sim", create=False)
        client = CountingClient(tracking.connect(tracking_uri))
        attrs = queue.attrs
        runs = {r.run_key: r for r in plan_runs(parse_spec(attrs["spec_text"], Path("sim.yaml")), "sim-data")}
        claimer = claims.Claimer(queue, list(process_key(next(iter(runs.values())))))
        group = tuple(claimer.process_key)
        rng = np.random.default_rng(os.getpid())
        while len(report["errors"]) < MAX_FAILED_TRAININGS:
            started = time.perf_counter()
            trial = claimer.claim()
            report["latencies"].append(time.perf_counter() - started)
            if trial is None:
                if group not in queue.group_counts():
                    break
                time.sleep(run_queue.HEARTBEAT_S)  # others still train: a failed one's trial may come back
                queue.fail_stale()
                continue
            try:
                accuracy = train_one(queue, client, attrs, runs[trial.user_attrs[run_queue.RUN_KEY]], trial,
                                     (train_s, epochs, n_predictions, rng))
            except Exception as err:  # the error a user would see in this worker's traceback
                report["errors"].append(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
                queue.retry(trial)
                continue
            queue.complete(trial, accuracy)
            report["trials"].append(trial.number)
    except Exception as err:  # the figure a user needs: what a worker sees when the store gives up
        report["errors"].append(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
    report["calls"] = client.calls if "client" in locals() else 0
    out.put(report)


def train_one(queue: Any, client: Any, attrs: dict, run: Any, trial: Any, training: tuple) -> float:
    """One simulated training under a heartbeat, logged as a real one is; its accuracy."""
    from harness import tracking

    if queue.is_retry(trial) and (done := tracking.finished_accuracy(client, attrs["experiment_id"],
                                                                          run.run_key)) is not None:
        return done
    train_s, epochs, n_predictions, rng = training
    with queue.heartbeat(trial):
        run_id = tracking.start_child(client, attrs["experiment_id"], attrs["parent_run_id"], run, ENVIRONMENT,
                                      trial.number)
        time.sleep(train_s)
        result = fake_result(run, epochs, n_predictions, train_s, rng)
        tracking.finish_child(client, run_id, result)
    return result.accuracy


def simulate(storage_url: str, tracking_uri: str, n_workers: int, trainings: int, train_s: float = 0.5,
             epochs: int = 10, n_predictions: int = 400) -> dict[str, Any]:
    """Enqueue `trainings` runs, drain them with `n_workers` forked workers, check exactly-once, return figures."""
    from optuna.trial import TrialState

    from harness import tracking
    from harness.execution import run_queue, workers
    from harness.study.design import plan_runs
    from harness.study.spec import parse_spec

    spec = parse_spec(SPEC.format(repeats=max(1, trainings // 4), epochs=epochs), Path("sim.yaml"))
    runs = plan_runs(spec, "sim-data")
    storage = run_queue.open_storage(storage_url)
    queue = run_queue.RunQueue.open(storage, "sim", create=True, kind=run_queue.KIND_RUN)
    client = tracking.connect(tracking_uri)
    exp_id, parent_id = workers.publish(queue, spec, SimpleNamespace(fingerprint="sim-data"), client)
    queue.enqueue(runs, set())
    storage.engine.dispose()  # forked workers must not share the parent's connections
    context, out = mp.get_context("fork"), mp.get_context("fork").Queue()
    processes = [context.Process(target=worker_loop, args=(storage_url, tracking_uri, train_s, epochs,
                                                           n_predictions, out)) for _ in range(n_workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    reports = [out.get() for _ in processes]
    span = time.perf_counter() - started
    for process in processes:
        process.join()
    tracking.finish_parent(client, parent_id)
    claimed = [n for r in reports for n in r["trials"]]
    complete = queue.trials(TrialState.COMPLETE)
    children = [r for r in tracking.child_runs(client, exp_id) if r.info.status == "FINISHED"]
    keys = [r.data.tags["harness.run_key"] for r in children]
    latencies = np.array([x for r in reports for x in r["latencies"]]) * 1000
    calls = sum(r["calls"] for r in reports)
    return {"workers": n_workers, "planned": len(runs), "trained": len(claimed), "span_s": span,
            "claims_per_s": len(claimed) / span, "claim_ms_median": float(np.median(latencies)),
            "claim_ms_p99": float(np.percentile(latencies, 99)),
            "duplicated": len(claimed) - len(set(claimed)) + len(keys) - len(set(keys)),
            "lost": len(runs) - len({t.user_attrs[run_queue.RUN_KEY] for t in complete}),
            "mlflow_calls_per_training": calls / max(1, len(claimed)), "mlflow_calls_per_s": calls / span,
            "failed_attempts": sum(len(r["errors"]) for r in reports),
            "first_error": next((e for r in reports for e in r["errors"]), "")}


def stores(kind: str, stack: ExitStack, folder: Path, mlflow_workers: int) -> tuple[str, str]:
    """(run storage URL, tracking URI) for a fresh study: PostgreSQL + mlflow server, or two SQLite files."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    database = stack.enter_context(services.postgres(max_connections=400))
    tracking = stack.enter_context(services.mlflow_server(f"{database}/mlflow", folder / "artifacts", mlflow_workers))
    return f"{database}/optuna", tracking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", nargs="+", default=["postgresql"], choices=["postgresql", "sqlite"])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 100])
    parser.add_argument("--trainings", type=int, default=2000)
    parser.add_argument("--train-s", type=float, default=0.5, help="seconds a simulated training sleeps")
    parser.add_argument("--mlflow-workers", type=int, default=4, help="`mlflow server --workers`")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as harness.tracking does
    for kind in args.store:
        for n in args.workers:
            with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
                storage, tracking = stores(kind, stack, Path(tmp), args.mlflow_workers)
                r = simulate(storage, tracking, n, args.trainings, args.train_s)
            print(f"RESULT {kind} N={n}: {r['trained']}/{r['planned']} trainings in {r['span_s']:.1f} s; "
                  f"{r['claims_per_s']:.1f} claims/s; claim latency median {r['claim_ms_median']:.1f} ms, "
                  f"p99 {r['claim_ms_p99']:.1f} ms; duplicated {r['duplicated']}, lost {r['lost']}; "
                  f"MLflow {r['mlflow_calls_per_training']:.1f} calls/training, {r['mlflow_calls_per_s']:.1f} calls/s"
                  + (f"; {r['failed_attempts']} failed attempts (retried), first: {r['first_error']}"
                     if r["first_error"] else ""), flush=True)


if __name__ == "__main__":
    main()
