"""`harness predict`: a study's chosen configuration → predictions for `--data`, optionally a seed ensemble.

`--data` is read as the study's own kind of data (training/targets.py): a contest csv answered `id,digit`, or
images (a folder, an npz, a csv like the study's) answered `id,label` with the class names. An incompatible
file is refused before anything trains or is stored. The configuration is the tune study's seed-robust best (a
tag on its parent run), a `run` study's base config, or, for a study the store has never seen, the base config
of its spec (given, or `studies/NAME.yaml`). The members train on every labelled row: the validation split or
fold exists to measure, not to predict. The ensemble is logged as one MLflow model (mean softmax) and registered
under the study's name; a second call with the same config, data and K loads it instead of training again.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import tracking
from harness.commands.common import positive, study_argument
from harness.errors import HarnessError
from harness.files import write_atomic
from harness.study.design import effective_seeds, make_run, resolve_stages, stable_hash
from harness.study.spec import (
    SEED_SOURCES,
    EvaluationConfig,
    ExecutionConfig,
    RunConfig,
    StudySpec,
    load_spec,
    parse_spec,
)

STUDIES_DIR = Path("studies")  # where a study the store has never seen is looked up by name
ROLE_PREDICT = "predict"
PREDICT_KEY = "harness.predict_key"
MODEL_URI = "harness.model_uri"  # the registered version this predict run logged


@dataclass(frozen=True)
class Chosen:
    spec: StudySpec
    config: RunConfig
    source: str  # where the config came from, for the user
    experiment_id: str | None  # None: the store has no experiment for the study yet


def predict(args: argparse.Namespace) -> int:
    name, spec = study_argument(args)
    k = positive(args.ensemble, "--ensemble")
    workers = positive(args.workers, "--workers")
    if spec is None and (STUDIES_DIR / f"{name}.yaml").is_file():
        spec = load_spec(STUDIES_DIR / f"{name}.yaml")
    uri = args.tracking_uri or (spec.tracking.uri if spec else None)
    if spec is None or _store_exists(uri):  # a study that ran: its stored config; else nothing is created yet
        client = tracking.connect(uri, create=False)
    else:
        client = None
    result = predict_submission(client, name, spec, args.data, args.out, k, uri, workers)
    trained = f"trained on all {result['trained_on']} labelled rows"
    trained = "loaded from MLflow" if result["reused_models"] else trained
    print(f"{result['rows']} predictions from {result['members']} model(s) ({trained}; config: "
          f"{result['config_from']}) written to {result['out']}")
    print(f"registered as MLflow model '{result['registered']}': mlflow models serve -m {result['model_uri']}")
    if result["accuracy"] is not None:
        print(f"accuracy on {args.data}: {100 * result['accuracy']:.2f}%")
    return 0


def _store_exists(uri: str | None) -> bool:
    """False only for a SQLite store whose file is missing (a server's store is there to ask)."""
    url = uri or tracking.default_uri()
    return not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).exists()


def chosen_config(client: Any, study: str, spec: StudySpec | None = None) -> Chosen:
    """The configuration `predict` uses for a study in the store (or, never run, its spec), and where it came from.
    Creates nothing: a study the store has not seen has no experiment id yet (predict makes it when it logs)."""
    exp_id = None if client is None else tracking.experiment_id(client, study, create=False)
    parent_id = None if exp_id is None else tracking.find_parent(client, exp_id)
    if parent_id is None:
        spec = spec or _spec_by_name(study, client.tracking_uri)
        return Chosen(spec, spec.base, f"the base config of {spec.source_path} (the study has not run)", exp_id)
    parent = client.get_run(parent_id)
    spec_text = Path(client.download_artifacts(parent_id, "study.yaml")).read_text(encoding="utf-8")
    spec = parse_spec(spec_text, Path(parent.data.tags.get(tracking.SPEC_PATH, "study.yaml")))
    best = parent.data.tags.get("harness.robust_best_config")
    if best:
        label = parent.data.tags.get("harness.robust_best", "")
        return Chosen(spec, RunConfig.model_validate_json(best), f"seed-robust best of the search ({label})", exp_id)
    return Chosen(spec, spec.base, "the study's base config", exp_id)


def _spec_by_name(study: str, tracking_uri: str) -> StudySpec:
    path = STUDIES_DIR / f"{study}.yaml"
    if not path.is_file():
        raise HarnessError(f"no study named '{study}' in {tracking_uri} and no {path}; give its spec file instead, "
                           "or run `harness run` / `harness tune` on it first")
    return load_spec(path)


def ensemble_members(chosen: Chosen, k: int, fingerprint: str, image_size: int = 28) -> list[Any]:
    """K planned runs of one config on every labelled row, differing only in init, order, augment, dropout seeds."""
    fresh = [s for s in SEED_SOURCES if s != "split"]  # no split to vary: every row trains
    seeds = chosen.config.seeds.model_copy(update={"fresh": fresh})
    evaluation = EvaluationConfig(method="all", test_shifts=chosen.config.evaluation.test_shifts)
    config = chosen.config.model_copy(update={"seeds": seeds, "evaluation": evaluation,
                                              "execution": ExecutionConfig()})  # trained one at a time
    stages = resolve_stages(config, image_size)
    return [make_run(chosen.spec.name, member, {}, config, effective_seeds(config, member), stages, fingerprint)
            for member in range(k)]


def predict_submission(client: Any, study: str, spec: StudySpec | None, data_path: Path, out: Path,
                       k: int, uri: str | None = None, workers: int = 1) -> dict[str, Any]:
    """Train (or load) the K-member ensemble, predict the file's images, write the answer, register the model.
    `client` None: the store does not exist yet (the study has not run); it is created once the data is read.
    `workers`: members trained side by side (harness.execution.members)."""
    from harness.execution.members import train_members
    from harness.training import determinism
    from harness.training.served import Ensemble
    from harness.training.sources import load_study_data
    from harness.training.targets import answer, load_target, request_frame, row_format

    chosen = chosen_config(client, study, spec)
    train = load_study_data(chosen.spec.data)
    form = row_format(chosen.spec.data, train)
    target = load_target(data_path, chosen.spec.data, form)  # a bad file is refused before any training
    members = ensemble_members(chosen, k, train.fingerprint, train.images.shape[1])
    key = stable_hash({"members": [m.run_key for m in members], "data": train.fingerprint})
    client = client or tracking.connect(uri)
    exp_id = chosen.experiment_id or tracking.experiment_id(client, study)
    determinism.configure_process(chosen.config.determinism, chosen.config.backend)
    stored = None if chosen.experiment_id is None else _stored_model(client, exp_id, key)
    if stored is None:
        trained = train_members(members, chosen.spec.data, workers, train)
        model = Ensemble(members[0].stages[-1].steps, k, form, trained, chosen.config.evaluation.test_shifts)
    else:
        model, model_uri = stored
    predicted = answer(target, model.probabilities(target), form)
    write_atomic(out, predicted.to_csv(index=False))
    correct = None if target.labels is None else predicted[form.answer].astype(str).to_numpy() == target.labels
    result = {"study": study, "config_from": chosen.source, "members": k, "reused_models": stored is not None,
              "rows": len(predicted), "out": str(out), "trained_on": len(train.digits), "registered": study,
              "accuracy": None if correct is None else float(correct.mean())}
    if stored is None:
        model_uri = _log(client, exp_id, key, model, request_frame(target, form), predicted, out, result)
    return {**result, "model_uri": model_uri}


def _stored_model(client: Any, exp_id: str, key: str) -> tuple[Any, str] | None:
    """The ensemble an earlier identical predict call logged (and its URI), if that call finished."""
    import mlflow.pyfunc

    found = client.search_runs([exp_id], f"tags.`{PREDICT_KEY}` = '{key}' and attributes.status = 'FINISHED'",
                               max_results=1)
    if not found:
        return None
    uri = found[0].data.tags[MODEL_URI]
    mlflow.set_tracking_uri(client.tracking_uri)
    return mlflow.pyfunc.load_model(uri).unwrap_python_model(), uri


def _log(client: Any, exp_id: str, key: str, model: Any, requests: Any, predicted: Any, out: Path,
         result: dict[str, Any]) -> str:
    """A predict run: the ensemble as one registered pyfunc model, the submission as an artifact; FINISHED only
    once everything is logged (a crash leaves a run the next call does not reuse)."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from harness.training.served import MEMBER

    mlflow.set_tracking_uri(client.tracking_uri)
    rows = requests.head(2)  # what a request sends
    with warnings.catch_warnings():  # MLflow's hint that integer columns cannot hold NaN: pixels never are NaN
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(rows, predicted.head(2))
    # the served class is importable harness code, pickled by reference: MLflow's pickle warning does not apply
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    tags = {tracking.ROLE: ROLE_PREDICT, tracking.STUDY: result["study"], PREDICT_KEY: key}
    name = f"predict · ensemble={len(model.members)}"
    with mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for index, member in enumerate(model.members):
            artifacts[MEMBER.format(index)] = str(Path(tmp) / MEMBER.format(index))
            member.save(artifacts[MEMBER.format(index)])
        with warnings.catch_warnings():  # nor does the nudge to add an input example: the signature is given
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(name="model", python_model=model, artifacts=artifacts, signature=signature,
                                           registered_model_name=result["study"],
                                           pip_requirements=served_requirements())
        mlflow.log_params({"ensemble": len(model.members), "config_from": result["config_from"],
                           "trained_on_rows": result["trained_on"]})
        if result["accuracy"] is not None:
            mlflow.log_metric("accuracy", result["accuracy"])
        mlflow.log_artifact(str(out), "submission")
        uri = f"models:/{result['study']}/{info.registered_model_version}"
        client.set_tag(run.info.run_id, MODEL_URI, uri)
    return uri


def served_requirements() -> list[str]:
    """What the served model imports, pinned to this environment (MLflow's own inference would load the model
    in a subprocess to find out). The `harness` package itself must be importable where it is served."""
    from importlib.metadata import version

    names = ["mlflow", "keras", "numpy", "pandas", "scipy", "opencv-python-headless"]
    return [f"{name}=={version(name)}" for name in names]
