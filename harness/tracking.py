"""The only module that talks to MLflow: one parent run per study, one child run per training.

A child run is created RUNNING when its training starts and filled in one go when it ends, status last, so
FINISHED means fully logged; a child left RUNNING by a dead process is marked KILLED and its training runs again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError, masked
from harness.files import absolute_sqlite_url, sqlite_from_template, writes_to

STORE_DIR = Path("mlruns")
ROLE = "harness.role"
STUDY = "harness.study"
TRIAL = "harness.trial_number"
SPEC_PATH = "harness.spec_path"


def default_uri() -> str:
    """A SQLite store under ./mlruns, next to its artifacts (what `mlflow ui` opens)."""
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def connect(uri: str | None, create: bool = True) -> Any:
    """An MlflowClient for `uri`, or a one-line error when the store cannot be reached. Without `create`, a SQLite
    store that does not exist is an error, not a new empty store (commands that only read: report, export)."""
    import logging

    uri = uri or default_uri()
    probe(uri)
    if not create:
        must_exist(uri, "MLflow store", "--tracking-uri")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # per-file bars drown the report
    # MLflow's telemetry thread posts to the internet and edits os.environ while others read it (a KeyError, 8 workers)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    for name in ("alembic", "mlflow"):  # schema-migration chatter on a new store is not news to a user
        logging.getLogger(name).setLevel(logging.WARNING)

    uri = absolute_sqlite_url(uri, "tracking store")  # MLflow needs absolute paths to place the artifact store
    sqlite_from_template(uri, f"mlflow-{mlflow.__version__}", _empty_store)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HarnessError(f"tracking store '{uri}' is unreachable: {first[:200]}") from None
    return client


def must_exist(url: str, what: str, option: str) -> None:
    """A SQLite URL whose file is missing: one line, and nothing created (a read must not leave a store behind)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise HarnessError(f"no {what} at {url.removeprefix('sqlite:///')}: nothing has run here yet; run the study "
                           f"first (`harness run`), or point {option} at the store it ran in")


def _empty_store(url: str) -> None:
    """MLflow's tables without its Default experiment, whose artifact folder would be the template's: MLflow
    creates that experiment, with its folder in the right place, when it opens a store without experiments."""
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(url, str(Path(url.removeprefix("sqlite:///")).parent / "artifacts")).engine.dispose()
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.execute("DELETE FROM experiments")
    db.commit()
    db.close()


DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # SQLAlchemy dialects MLflow stores run on
PROBE_TIMEOUT_S = 5


def probe(uri: str | None) -> None:
    """Fail fast: MLflow's own client retries an unreachable server (HTTP) or database (SQLAlchemy engine, about
    100 s) before it gives up; one TCP connect or one health request with a timeout answers in seconds. Creates
    nothing, so commands call it before they load data."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlsplit(uri or "")
    dialect = parsed.scheme.split("+")[0]
    try:
        if parsed.scheme in ("http", "https"):
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
        elif dialect in DB_PORTS and parsed.hostname:
            address = (parsed.hostname, parsed.port or DB_PORTS[dialect])
            socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
    except (OSError, urllib.error.URLError) as err:
        reason = getattr(err, "reason", None) or err.strerror or err
        raise HarnessError(f"tracking store '{masked(uri)}' is unreachable: {reason}") from None


def experiment_id(client: Any, study: str, create: bool = True) -> str | None:
    experiment = client.get_experiment_by_name(study)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise HarnessError(
            f"study '{study}' was deleted in {client.tracking_uri}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or rename the study"
        )
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    artifacts = None
    if client.tracking_uri.startswith("sqlite:///"):
        artifacts = (Path(client.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return client.create_experiment(study, artifact_location=artifacts)


def study_parent(client: Any, exp_id: str, study: str, spec_text: str, spec_path: str = "") -> str:
    """The study's parent run: reused across re-runs so all children sit under one parent."""
    parent_id = find_parent(client, exp_id)
    if parent_id is not None:
        client.update_run(parent_id, status="RUNNING")
    else:
        parent_id = client.create_run(exp_id, run_name=f"study:{study}", tags={ROLE: "study", STUDY: study}).info.run_id
    with writes_to(f"the spec artifacts of MLflow run {parent_id} ({client.tracking_uri})"):
        client.log_text(parent_id, spec_text, "study.yaml")  # the latest version: what `predict` reads
        # every version of the spec that ran is kept, so an edited spec never hides what earlier runs used
        digest = hashlib.sha256(spec_text.encode()).hexdigest()[:12]
        client.log_text(parent_id, spec_text, f"specs/study-{digest}.yaml")
    if spec_path:  # relative data paths in the spec resolve against its folder (predict re-reads the spec)
        client.set_tag(parent_id, SPEC_PATH, spec_path)
    return parent_id


def find_parent(client: Any, exp_id: str) -> str | None:
    found = client.search_runs([exp_id], f"tags.`{ROLE}` = 'study'", max_results=1, order_by=["start_time ASC"])
    return found[0].info.run_id if found else None


def child_runs(client: Any, exp_id: str) -> list[Any]:
    return client.search_runs([exp_id], f"tags.`{ROLE}` = 'training'", max_results=50_000)


def completed_run_keys(client: Any, exp_id: str) -> set[str]:
    """Runs that need no re-run: finished, or failed for a recorded reason (not retried forever)."""
    return {
        r.data.tags.get("harness.run_key", "")
        for r in child_runs(client, exp_id)
        if r.info.status in ("FINISHED", "FAILED")
    }


def finished_accuracy(client: Any, exp_id: str, run_key: str) -> float | None:
    """The accuracy of a FINISHED child run of this run key, or None when there is none."""
    found = client.search_runs([exp_id], f"tags.`{ROLE}` = 'training' and tags.`harness.run_key` = '{run_key}' "
                               "and attributes.status = 'FINISHED'", max_results=1)
    return found[0].data.metrics.get("accuracy", math.nan) if found else None


def start_child(client: Any, exp_id: str, parent_id: str, run: Any, environment: dict[str, Any], trial: int) -> str:
    """A RUNNING child run with everything known before training: a crash leaves it visible, later marked KILLED."""
    from mlflow.entities import Param

    tags = {
        ROLE: "training",
        STUDY: run.study,
        "mlflow.parentRunId": parent_id,
        "harness.run_key": run.run_key,
        "harness.config_key": run.config_key,
        "harness.replicate": str(run.replicate),
        "harness.data_fingerprint": run.data_fingerprint,
        TRIAL: str(trial),
        "harness.worker": f"{socket.gethostname()}:{os.getpid()}",
        **{f"factor.{key}": value for key, value in run.factors.items()},
        **{f"env.{key}": str(value) for key, value in environment.items()},
        # the design travels with the runs table (docs/runs-table.md): kind, seed block, each factor's role
        "harness.design": getattr(run, "design", "factorial"),
        "harness.seed_block": getattr(run, "seed_block", ""),
        **({"harness.base_point": "true"} if getattr(run, "base_point", False) else {}),
        **{f"harness.role.{key}": role for key, role in getattr(run, "roles", {}).items()},
    }
    run_id = client.create_run(exp_id, run_name=run.name, tags=tags).info.run_id
    params = [Param(key, _param_text(value)) for key, value in run.params().items()]
    # factor levels as labels (on/off, a→b) beside the tags: the UI's compare view plots params, not tags;
    # no config key starts with `factor.`, so they never collide with the config params
    params += [Param(f"factor.{key}", value) for key, value in run.factors.items()]
    client.log_batch(run_id, params=params)
    return run_id


def finish_child(client: Any, run_id: str, result: Any) -> None:
    """Metrics, artifacts and the final status; the status goes last, so FINISHED means fully logged."""
    from mlflow.entities import Metric, RunTag

    from harness.files import kill_point

    now = int(time.time() * 1000)
    final = {"accuracy": result.accuracy, "loss": result.loss, "wall_time_s": result.wall_time_s,
             "cpu_time_s": result.cpu_time_s, "epochs_trained": len(result.history)}
    metrics = [Metric(key, float(value), now, 0) for key, value in final.items() if math.isfinite(value)]
    for row in result.history:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"):
            if key in row and math.isfinite(row[key]):
                metrics.append(Metric(f"epoch_{key}", row[key], now, row["epoch"]))
    tags = {
        "harness.failure_reason": result.failure_reason,
        "harness.weights_hash": result.weights_hash,
        **{f"harness.{key}": getattr(result, key) for key in ("stopped", "resumed") if getattr(result, key)},
        **{f"determinism.actual.{key}": str(value) for key, value in result.determinism.items()},
    }
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(key, value) for key, value in tags.items()])
    kill_point("logging")
    with (writes_to(f"the artifacts of MLflow run {run_id} ({client.tracking_uri})"),
          tempfile.TemporaryDirectory() as tmp):
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps({"resolved": result.run.resolved(), "history": result.history}, indent=1))
        client.log_artifact(run_id, str(config_path))
        if result.predictions is not None:
            predictions_path = Path(tmp) / "predictions.csv"
            result.predictions.to_csv(predictions_path, index=False)
            client.log_artifact(run_id, str(predictions_path))
    # MLflow has no PRUNED status: a pruned trial ends KILLED, its reason tag says "pruned after epoch N"
    client.set_terminated(run_id, status="KILLED" if result.status == "PRUNED" else result.status)


def end_child(client: Any, run_id: str, status: str, reason: str) -> None:
    client.set_tag(run_id, "harness.failure_reason", reason)
    client.set_terminated(run_id, status=status)


def mark_orphans(client: Any, exp_id: str, live_trials: set[int]) -> int:
    """Children RUNNING in MLflow whose trial is not running any more (its worker died): marked KILLED."""
    orphans = [
        r
        for r in child_runs(client, exp_id)
        if r.info.status == "RUNNING" and int(r.data.tags.get(TRIAL, -1)) not in live_trials
    ]
    for run in orphans:
        end_child(client, run.info.run_id, "KILLED", "worker died before the run was logged; retried")
    return len(orphans)


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def runs_table(client: Any, exp_id: str, predictions_dir: Path | None = None) -> pd.DataFrame:
    """The study's trainings as a tidy runs table (see docs/runs-table.md); latest run per run_key."""
    rows = []
    for run in sorted(child_runs(client, exp_id), key=lambda r: r.info.start_time):
        tags, metrics = run.data.tags, run.data.metrics
        row = {
            "run_key": tags.get("harness.run_key", ""),
            "config_key": tags.get("harness.config_key", ""),
            "status": run.info.status,
            "failure_reason": tags.get("harness.failure_reason", ""),
            "accuracy": metrics.get("accuracy", math.nan),
            "loss": metrics.get("loss", math.nan),
            "weights_hash": tags.get("harness.weights_hash", ""),
            "wall_time_s": metrics.get("wall_time_s", math.nan),
            "replicate": int(tags.get("harness.replicate", 0)),
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            **{key.removeprefix("factor."): value for key, value in tags.items() if key.startswith("factor.")},
            **_design_columns(tags),
            "environment": environment_label(tags),
        }
        if predictions_dir is not None and run.info.status == "FINISHED":
            row["predictions"] = _download_predictions(client, run.info.run_id, predictions_dir)
        rows.append(row)
    table = pd.DataFrame(rows)
    return table if table.empty else table.drop_duplicates("run_key", keep="last").reset_index(drop=True)


ENVIRONMENT_TAGS = ("keras_backend", "backend_version", "keras", "numpy", "python", "devices", "cpu_count", "cpu_model")


def environment_label(tags: dict[str, str]) -> str:
    """What changes kernels, as one readable label (`tensorflow 2.21.0 · keras 3.15.1 · ...`): the report tells
    runs from different environments apart by it. Empty for runs logged without env tags."""
    parts = [f"{key} {tags[f'env.{key}']}" if key not in ("keras_backend", "backend_version") else tags[f"env.{key}"]
             for key in ENVIRONMENT_TAGS if f"env.{key}" in tags]
    return " · ".join(parts)


def _design_columns(tags: dict[str, str]) -> dict[str, str]:
    """The design columns (docs/runs-table.md) and `role.<factor>` from a child's tags, where it has them."""
    columns = ("design", "seed_block", "stopped", "resumed", "base_point")
    out = {col: tags[f"harness.{col}"] for col in columns if f"harness.{col}" in tags}
    out.update({key.removeprefix("harness."): value for key, value in tags.items() if key.startswith("harness.role.")})
    return out


def _download_predictions(client: Any, run_id: str, out_dir: Path) -> str:
    target = out_dir / run_id
    target.mkdir(parents=True, exist_ok=True)
    path = client.download_artifacts(run_id, "predictions.csv", str(target))
    return str(Path(path).resolve())


def attach_report(client: Any, exp_id: str, report_dir: Path) -> None:
    """The report, its plots and its runs table as artifacts of the study's parent run."""
    parent_id = find_parent(client, exp_id)
    if parent_id is not None:
        for path in sorted(Path(report_dir).glob("*")):
            if path.is_file():
                client.log_artifact(parent_id, str(path), "report")


def log_round(client: Any, parent_id: str, counts: dict[str, float], tags: dict[str, str]) -> int:
    """The next round of a sequential study on its parent run (counts as metrics by round, tags): its number."""
    from mlflow.entities import Metric, RunTag
    step = int(client.get_run(parent_id).data.tags.get("harness.sequential.round", "0")) + 1
    client.log_batch(parent_id, [Metric(k, float(v), int(time.time() * 1e3), step) for k, v in counts.items()],
                     tags=[RunTag(k, str(v)) for k, v in {**tags, "harness.sequential.round": step}.items()])
    return step


def finish_parent(client: Any, parent_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(parent_id, status=status)


RUN_ID_PATTERN = r"^[0-9a-f]{32}$"  # what MLflow's UI shows as a run's ID


def training_run(client: Any, run_id: str, label: str) -> dict[str, Any]:
    """A stored training for `harness explain`: its resolved config, accuracy, weights hash, environment and its
    study's spec (text and path, for the data and builder paths). One-line errors for anything else."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise HarnessError(f"{label}: no run {run_id} in {client.tracking_uri}") from None
    tags = run.data.tags
    experiment = client.get_experiment(run.info.experiment_id).name
    if ROLE not in tags:
        raise HarnessError(f"{label}: run {run_id} (experiment '{experiment}') was not logged by harness; explain "
                           "takes the training runs of `harness run`, or run config files")
    if tags[ROLE] != "training":
        raise HarnessError(f"{label}: run {run_id} is a {tags[ROLE]} run, not a training; pick one of its child runs")
    if run.info.status != "FINISHED":
        reason = tags.get("harness.failure_reason") or "no result"
        raise HarnessError(f"{label}: run {run_id} is {run.info.status} ({reason}); explain compares finished "
                           "trainings")
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads(Path(client.download_artifacts(run_id, "config.json", tmp)).read_text())
        parent = tags.get("mlflow.parentRunId")
        spec_text = Path(client.download_artifacts(parent, "study.yaml", tmp)).read_text() if parent else ""
    spec_path = client.get_run(parent).data.tags.get(SPEC_PATH, "") if parent else ""
    return {"run_id": run_id, "experiment": experiment, "resolved": config["resolved"],
            "accuracy": run.data.metrics.get("accuracy"), "weights_hash": tags.get("harness.weights_hash", ""),
            "data_fingerprint": tags.get("harness.data_fingerprint", ""), "environment": environment_tags(tags),
            "spec_text": spec_text, "spec_path": spec_path, "study": tags.get(STUDY, "")}


def environment_tags(tags: dict[str, str]) -> dict[str, str]:
    """What a run recorded of its environment: env.* and the determinism read back (not whether its compiled
    model was reused, which differs between runs of one process by design)."""
    return {key: value for key, value in tags.items() if key.startswith("env.")
            or (key.startswith("determinism.actual.") and key != "determinism.actual.model")}


def run_environment(client: Any, run_id: str) -> dict[str, str]:
    return environment_tags(client.get_run(run_id).data.tags)


def name_parent(client: Any, exp_id: str, name: str, tags: dict[str, str]) -> str | None:
    """Rename a study's parent run (`explain:A..B`) and tag it; returns its ID."""
    parent_id = find_parent(client, exp_id)
    if parent_id is not None:
        client.update_run(parent_id, name=name)
        for key, value in tags.items():
            client.set_tag(parent_id, key, value)
    return parent_id


def same_config_runs(client: Any, run_id: str) -> list[dict[str, Any]]:
    """The finished trainings in a run's experiment with its config but any seeds (itself included): the store's
    replicates of its configuration, each with its seeds."""
    def config_of(run: Any) -> tuple:
        params = {k: v for k, v in run.data.params.items() if not k.startswith(("seeds.", "factor."))}
        return tuple(sorted(params.items())), run.data.tags.get("harness.data_fingerprint", "")

    mine = client.get_run(run_id)
    return [{"run_id": run.info.run_id, "accuracy": run.data.metrics.get("accuracy", math.nan),
             "weights_hash": run.data.tags.get("harness.weights_hash", ""),
             "seeds": {k.removeprefix("seeds."): v for k, v in run.data.params.items() if k.startswith("seeds.")}}
            for run in child_runs(client, mine.info.experiment_id)
            if run.info.status == "FINISHED" and config_of(run) == config_of(mine)]
