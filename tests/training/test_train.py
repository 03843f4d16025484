"""Training options that change how a run learns: the learning-rate schedule, label smoothing, and stages that
stop on a plateau of their training loss."""

import math
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from harness.errors import DataError, DiskWriteError
from harness.execution.prepared import prepare
from harness.files import FULL_AT_ENV
from harness.study.design import Stage
from harness.study.spec import EvaluationConfig, Plateau, parse_spec
from harness.training.train import split_indices, stage_end, targets, total_steps, train_run

SPEC = """
name: train-options
data: {{source: synthetic, n: 200, seed: 3}}
base:
  model: {{filters: 4, depth: 1, dense_units: 8}}
  training: {{batch_size: 32, learning_rate: 0.01, schedule: {schedule}, label_smoothing: {smoothing}}}
  stages: {{first: {{pipeline: [], epochs: 2}}, second: {{pipeline: [stretch], epochs: 1}}}}
  stage_order: [first, second]
"""


def trained(tmp_path, schedule: str, smoothing: float):
    study = prepare(parse_spec(SPEC.format(schedule=schedule, smoothing=smoothing), tmp_path / "s.yaml"))
    run = study.runs[0]
    images_for = partial(study.data.images_for, cache_dir=tmp_path)
    result = train_run(run, study.data.ids, study.data.digits, images_for, keep_model=True)
    assert result.status == "FINISHED", result.failure_reason
    return run, result


def test_total_steps_span_every_stage(tmp_path):
    study = prepare(parse_spec(SPEC.format(schedule="cosine", smoothing=0), tmp_path / "s.yaml"))
    assert total_steps(study.runs[0], 160) == 5 * 3  # ceil(160/32) batches × (2 + 1) epochs


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_cosine_schedule_ends_at_zero_after_the_last_stage(tmp_path, schedule):
    run, result = trained(tmp_path, schedule, 0)
    final_rate = float(result.model.optimizer.learning_rate)
    assert int(result.model.optimizer.iterations) == total_steps(run, 160)
    if schedule == "cosine":
        assert final_rate == pytest.approx(0.0, abs=1e-9)
    else:
        assert final_rate == pytest.approx(0.01)


def test_label_smoothing_trains_on_one_hot_targets(tmp_path):
    run, result = trained(tmp_path, "constant", 0.2)
    assert result.model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    # a smoothed target's entropy bounds the loss from below: 0.82 on the true digit, 0.02 on each other one
    floor = -(0.82 * np.log(0.82) + 9 * 0.02 * np.log(0.02))
    assert result.loss >= floor
    assert targets(np.array([3, 0]), run).tolist()[0] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_a_study_cannot_train_on_all_rows_it_would_measure_nothing(tmp_path):
    """`evaluation: {method: all}` is what predict fits; a study's runs exist to measure, so it is refused."""
    text = SPEC.format(schedule="constant", smoothing=0).replace("base:\n", "base:\n  evaluation: {method: all}\n")
    with pytest.raises(DataError, match=r"leaves 0 validation images; .*`all` is for predict"):
        prepare(parse_spec(text, tmp_path / "s.yaml"))


def test_training_on_all_rows_uses_every_row_and_measures_nothing(tmp_path):
    """What predict's members do: every row trains, no validation pass, no accuracy claimed."""
    study = prepare(parse_spec(SPEC.format(schedule="constant", smoothing=0), tmp_path / "s.yaml"))
    run = study.runs[0]
    run = replace(run, config=run.config.model_copy(update={"evaluation": EvaluationConfig(method="all")}))
    train_idx, val_idx = split_indices(study.data.digits, run.config.evaluation, 0)
    assert train_idx.tolist() == list(range(200)) and len(val_idx) == 0
    result = train_run(run, study.data.ids, study.data.digits, partial(study.data.images_for, cache_dir=tmp_path))
    assert result.status == "FINISHED" and np.isnan(result.accuracy) and result.predictions is None
    assert len(result.history) == 3 and "val_accuracy" not in result.history[-1] and result.weights_hash


def test_a_full_disk_under_the_preprocessing_cache_is_the_harness_s_error_not_a_failed_run(tmp_path, monkeypatch):
    """A worker with a cold cache (one on another machine) on a full disk: raised, so the worker exits 2 and the
    run is retried; it was a FAILED run, counted done, its configuration blamed for the disk."""
    study = prepare(parse_spec(SPEC.format(schedule="constant", smoothing=0), tmp_path / "s.yaml"))
    cache = tmp_path / "cache"
    monkeypatch.setenv(FULL_AT_ENV, "atomic-write")
    with pytest.raises(DiskWriteError, match="No space left on device"):
        train_run(study.runs[0], study.data.ids, study.data.digits, partial(study.data.images_for, cache_dir=cache))
    assert not any(cache.iterdir()), "a partial cache entry was left behind"

    def model_error(_stage):
        raise ValueError("Input 0 of layer conv2d is incompatible with the layer")

    failed = train_run(study.runs[0], study.data.ids, study.data.digits, model_error)  # the run's own: recorded
    assert failed.status == "FAILED" and failed.failure_reason.startswith("ValueError: Input 0 of layer")


PLATEAU_SPEC = """
name: plateau
data: {source: digits}
repeats: 1
base:
  model: {filters: 4, depth: 1, dense_units: 16}
  training: {batch_size: 64, learning_rate: 0.01, schedule: cosine}
  stages:
    first: {pipeline: [], epochs: {until: plateau, max: 12, patience: 1, min_delta: 0.02}}
    then: {pipeline: [stretch], epochs: 1}
  stage_order: [first, then]
"""


def stop_epoch(losses: list[float], patience: int, min_delta: float) -> int:
    """Reference: the epoch after which `patience` epochs in a row gained no more than `min_delta` on the best."""
    best, waited = math.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        best, waited = (loss, 0) if loss < best - min_delta else (best, waited + 1)
        if waited >= patience:
            return epoch
    return len(losses)


@pytest.fixture(scope="module")
def plateau_runs(tmp_path_factory):
    """The bundled 8x8 digits trained twice in this process, a stage that stops on a plateau and one more epoch
    after it (8 s, 2 cores)."""
    folder = tmp_path_factory.mktemp("plateau")
    study = prepare(parse_spec(PLATEAU_SPEC, folder / "s.yaml"))
    images_for = partial(study.data.images_for, cache_dir=folder)
    return study, [train_run(study.runs[0], study.data.ids, study.data.digits, images_for) for _ in range(2)]


def test_a_plateau_stage_stops_where_its_training_loss_stops_improving(plateau_runs):
    _, (result, _) = plateau_runs
    assert result.status == "FINISHED", result.failure_reason
    first = [row for row in result.history if row["stage"] == "first"]
    trained = len(first)
    assert 2 <= trained < 12, "the stage should stop on its plateau, before its max"
    assert trained == stop_epoch([row["loss"] for row in first], patience=1, min_delta=0.02)
    assert [row["epoch"] for row in result.history[trained:]] == [trained + 1]  # the next stage goes on from there
    assert result.stopped == f"first: plateau at {trained}/12 · then: fixed 1"


def test_the_same_config_stops_at_the_same_epoch_with_the_same_weights(plateau_runs):
    _, (first, second) = plateau_runs
    assert (second.stopped, second.weights_hash) == (first.stopped, first.weights_hash)
    assert second.determinism["model"] == "reused"  # and a reused compiled model stops as a fresh one did


def test_a_cosine_schedule_spans_a_plateau_stage_s_max(plateau_runs, tmp_path):
    """The schedule is fixed before training: a stage that stops early leaves its rate where it was."""
    study, _ = plateau_runs
    run = study.runs[0]
    assert total_steps(run, 1000) == 16 * (12 + 1)
    mixed = SPEC.format(schedule="cosine", smoothing=0).replace(
        "epochs: 1}", "epochs: {until: plateau, max: 9, patience: 2}}")
    assert total_steps(prepare(parse_spec(mixed, tmp_path / "s.yaml")).runs[0], 160) == 5 * (2 + 9)


def test_stage_end_names_how_each_stage_ended():
    plateau = Plateau(until="plateau", max=10, patience=2)
    assert stage_end(Stage("a", plateau, ()), 6) == "a: plateau at 6/10"
    assert stage_end(Stage("a", plateau, ()), 10) == "a: max 10/10"
    assert stage_end(Stage("b", 4, ()), 4) == "b: fixed 4"


def test_how_a_stage_ended_is_logged_and_shown_in_the_runs_table(plateau_runs, tmp_path):
    from harness import tracking
    from harness.analysis.runs_table import factor_columns

    _, (result, _) = plateau_runs
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = tracking.experiment_id(client, "plateau")
    parent = tracking.study_parent(client, exp, "plateau", PLATEAU_SPEC)
    run_id = tracking.start_child(client, exp, parent, result.run, {}, trial=0)
    tracking.finish_child(client, run_id, result)
    assert client.get_run(run_id).data.metrics["epochs_trained"] == len(result.history)
    table = tracking.runs_table(client, exp)
    assert table.loc[0, "stopped"] == result.stopped and "stopped" not in factor_columns(table)
