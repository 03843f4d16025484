"""`harness predict`: a study's chosen configuration → a contest submission (`id,digit`), optionally a seed ensemble.

The configuration is the tune study's seed-robust best (a tag on its parent run) or, for a `run` study, its base
config. The K member models are logged to MLflow with their signature; a second call with the same config, data
and K loads them instead of training again.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import tracking
from harness.commands.common import positive, study_argument
from harness.errors import HarnessError
from harness.execution.prepared import CACHE_DIR
from harness.files import write_atomic
from harness.study.design import effective_seeds, make_run, resolve_stages, stable_hash
from harness.study.spec import SEED_SOURCES, RunConfig, StudySpec, parse_spec
from harness.training import preprocess

ROLE_PREDICT = "predict"
PREDICT_KEY = "harness.predict_key"


@dataclass(frozen=True)
class Chosen:
    spec: StudySpec
    config: RunConfig
    source: str  # where the config came from, for the user
    experiment_id: str


def predict(args: argparse.Namespace) -> int:
    name, spec = study_argument(args)
    client = tracking.connect(args.tracking_uri or (spec.tracking.uri if spec else None))
    result = predict_submission(client, name, spec, args.data, args.out, positive(args.ensemble, "--ensemble"))
    trained = "loaded from MLflow" if result["reused_models"] else "trained"
    print(f"{result['rows']} predictions from {result['members']} model(s) ({trained}; config: "
          f"{result['config_from']}) written to {result['out']}")
    if result["accuracy"] is not None:
        print(f"accuracy on {args.data}: {100 * result['accuracy']:.2f}%")
    return 0


def chosen_config(client: Any, study: str, spec: StudySpec | None = None) -> Chosen:
    """The configuration `predict` uses for a study in the store (or, never run, its spec), and where it came from."""
    exp_id = tracking.experiment_id(client, study, create=False)
    parent_id = None if exp_id is None else tracking.find_parent(client, exp_id)
    if parent_id is None and spec is not None:
        return Chosen(spec, spec.base, "the spec's base config (the study has not run)",
                      tracking.experiment_id(client, study))
    if parent_id is None:
        raise HarnessError(f"no study named '{study}' in {client.tracking_uri}; give its spec file instead, or run "
                           "`harness run` / `harness tune` on it first")
    parent = client.get_run(parent_id)
    spec_text = Path(client.download_artifacts(parent_id, "study.yaml")).read_text(encoding="utf-8")
    spec = parse_spec(spec_text, Path(parent.data.tags.get(tracking.SPEC_PATH, "study.yaml")))
    best = parent.data.tags.get("harness.robust_best_config")
    if best:
        label = parent.data.tags.get("harness.robust_best", "")
        return Chosen(spec, RunConfig.model_validate_json(best), f"seed-robust best of the search ({label})", exp_id)
    return Chosen(spec, spec.base, "the study's base config", exp_id)


def ensemble_members(chosen: Chosen, k: int, fingerprint: str, image_size: int = 28) -> list[Any]:
    """K planned runs of one config that differ only in their init, order, augment and dropout seeds."""
    fresh = [s for s in SEED_SOURCES if s != "split"]  # one split: members agree on what validation means
    config = chosen.config.model_copy(update={"seeds": chosen.config.seeds.model_copy(update={"fresh": fresh})})
    stages = resolve_stages(config, image_size)
    return [make_run(chosen.spec.name, member, {}, config, effective_seeds(config, member), stages, fingerprint)
            for member in range(k)]


def predict_submission(client: Any, study: str, spec: StudySpec | None, data_path: Path, out: Path,
                       k: int) -> dict[str, Any]:
    """Train (or load) K members, average their softmax over the file's images, write `id,digit`."""
    from harness.training import determinism
    from harness.training.data import LETTERS, load_contest_csv
    from harness.training.sources import load_study_data
    from harness.training.user_model import model_inputs

    chosen = chosen_config(client, study, spec)
    target = load_contest_csv(data_path)  # a bad file is refused before any training
    train = load_study_data(chosen.spec.data)
    members = ensemble_members(chosen, k, train.fingerprint, train.images.shape[1])
    key = stable_hash({"members": [m.run_key for m in members], "data": train.fingerprint})
    determinism.configure_process(chosen.config.determinism, chosen.config.backend)
    exp_id = chosen.experiment_id
    models, reused = _stored_models(client, exp_id, key), True
    if models is None:
        models, reused = _train_members(members, train), False
    steps = members[0].stages[-1].steps
    images = preprocess.cached_pipeline(target.images, target.fingerprint, steps, CACHE_DIR)[0]
    letters = np.searchsorted(np.array(LETTERS), target.letters).astype(np.int32)[:, None]
    x = model_inputs(models[0], images, {"letter": letters})  # a user model may take the letter as a side input
    probabilities = np.mean([_softmax(model.predict(x, batch_size=512, verbose=0)) for model in models], axis=0)
    submission = pd.DataFrame({"id": target.ids, "digit": probabilities.argmax(axis=1)})
    write_atomic(out, submission.to_csv(index=False))
    result = {"study": study, "config_from": chosen.source, "members": k, "reused_models": reused,
              "rows": len(submission), "out": str(out),
              "accuracy": None if target.digits is None else float((submission["digit"] == target.digits).mean())}
    if not reused:
        _log(client, exp_id, key, models, x, probabilities, out, result)
    return result


def _train_members(members: list[Any], train: Any) -> list[Any]:
    from functools import partial

    from harness.training.train import train_run

    models = []
    for member in members:
        result = train_run(member, train.ids, train.digits, partial(train.images_for, cache_dir=CACHE_DIR),
                           keep_model=True, side=train.side, n_classes=train.n_classes)
        if result.status != "FINISHED":
            raise HarnessError(f"ensemble member {member.replicate} failed to train: {result.failure_reason}")
        models.append(result.model)
    return models


def _softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(logits.astype(np.float64), axis=1)


def _stored_models(client: Any, exp_id: str, key: str) -> list[Any] | None:
    """The members of an earlier identical predict call, if one finished logging them."""
    import mlflow.keras

    found = client.search_runs([exp_id], f"tags.`{PREDICT_KEY}` = '{key}' and attributes.status = 'FINISHED'",
                               max_results=1)
    if not found:
        return None
    uris = json.loads(found[0].data.tags["harness.model_uris"])
    mlflow.set_tracking_uri(client.tracking_uri)
    return [mlflow.keras.load_model(uri) for uri in uris]


def _log(client: Any, exp_id: str, key: str, models: list[Any], x: Any, probabilities: np.ndarray,
         out: Path, result: dict[str, Any]) -> None:
    """A predict run: members with signatures, the submission as an artifact; FINISHED only once all are logged."""
    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(client.tracking_uri)
    head = {name: value[:2] for name, value in x.items()} if isinstance(x, dict) else x[:2].astype(np.float32)
    signature = infer_signature(head, probabilities[:2].astype(np.float32))
    tags = {tracking.ROLE: ROLE_PREDICT, tracking.STUDY: result["study"], PREDICT_KEY: key}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"predict · ensemble={len(models)}", tags=tags) as run:
        uris = [mlflow.keras.log_model(model, name=f"member-{i}", signature=signature).model_uri
                for i, model in enumerate(models)]
        mlflow.log_params({"ensemble": len(models), "config_from": result["config_from"]})
        if result["accuracy"] is not None:
            mlflow.log_metric("accuracy", result["accuracy"])
        mlflow.log_artifact(str(out), "submission")
        client.set_tag(run.info.run_id, "harness.model_uris", json.dumps(uris))
