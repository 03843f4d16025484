"""execution.rounds: seeds in rounds until decide() settles every comparison, with the queue and MLflow stood in
for (in-process, no TensorFlow): which points get seeds, when it stops, what a resume does, what is logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.execution import rounds
from harness.study.design import plan_runs
from harness.study.spec import parse_spec

SPEC = """name: seq
design: one_at_a_time
repeats: {min: 3, max: 8, resolution_pp: 1.0}
factors:
  training.learning_rate: [0.001, 0.01]
  augmentation.enabled: [false, true]
"""


class Store:
    """The runs table a drain would leave in MLflow: each enqueued run 'trained' with a planted accuracy."""

    def __init__(self, effect: dict[str, float], sd: float) -> None:
        self.rows: list[dict] = []
        self.queued: list = []
        self.logged: list[tuple[dict, dict]] = []
        self.effect, self.sd = effect, sd

    def enqueue(self, runs: list) -> None:
        done = {r["run_key"] for r in self.rows}
        self.queued += [run for run in runs if run.run_key not in done and run not in self.queued]

    def drain(self, total: int) -> None:
        for run in self.queued:
            point = "|".join(run.factors.values()).encode()
            rng = np.random.default_rng([run.replicate, *point])
            acc = 0.8 + sum(self.effect.get(f"{k}={v}", 0.0) for k, v in run.factors.items()) + rng.normal(0, self.sd)
            self.rows.append({"run_key": run.run_key, "config_key": run.config_key, "replicate": run.replicate,
                              "seed_block": run.seed_block, "design": run.design, "status": "FINISHED",
                              "accuracy": acc, **run.factors})
        self.queued = []

    def table(self, client, exp_id, runs) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def log_round(self, client, parent_id, counts, tags) -> int:
        self.logged.append((counts, tags))
        return len(self.logged)


@pytest.fixture
def spec():
    return parse_spec(SPEC, Path("seq.yaml"))


def _train(spec, store: Store, monkeypatch, workers: int = 1) -> dict:
    monkeypatch.setattr(rounds, "study_table", store.table)
    monkeypatch.setattr(rounds.tracking, "log_round", store.log_round)
    runs = plan_runs(spec, "fingerprint", 28)
    return rounds.train_in_rounds(runs, spec, None, "0", "p", store.enqueue, store.drain, workers)


def _seeds(store: Store) -> dict[tuple[str, str], int]:
    table = pd.DataFrame(store.rows)
    return table.groupby(["training.learning_rate", "augmentation.enabled"]).size().to_dict()


def test_a_large_effect_settles_at_min_and_the_null_trains_on(spec, monkeypatch) -> None:
    store = Store({"training.learning_rate=0.01": 0.15}, sd=0.003)
    decision = _train(spec, store, monkeypatch)
    seeds = _seeds(store)
    assert seeds[("0.01", "off")] == 3  # the moved learning rate: settled after min
    assert seeds[("0.001", "on")] > 3 and seeds[("0.001", "off")] == seeds[("0.001", "on")]  # base + moved augment
    by = {c["factor"]: c["state"] for c in decision["comparisons"]}
    assert by["training.learning_rate"] == "effect" and by["augmentation.enabled"] in ("no_effect", "open")
    assert len(store.logged) >= 2 and store.logged[0][0]["sequential.effect"] == 1
    first = store.logged[0][1]["harness.sequential.reason"]
    assert first == ("1 of 2 comparison(s) open (augmentation.enabled off vs on): next round trains 2 more run(s) over "
                     "2 design point(s)")
    last = store.logged[-1][1]
    assert last["harness.sequential.state"] == decision["state"]
    assert last["harness.sequential.reason"].startswith("stopped")


def test_it_stops_at_max_and_a_resume_adds_nothing(spec, monkeypatch) -> None:
    store = Store({}, sd=0.02)  # 2 pp seed noise: 8 seeds cannot settle ±1 pp
    decision = _train(spec, store, monkeypatch)
    assert decision["state"] == "max_reached"
    assert set(_seeds(store).values()) == {8}
    rows = len(store.rows)
    again = _train(spec, store, monkeypatch)
    assert len(store.rows) == rows and again["state"] == "max_reached"
    assert "still open at the maximum of 8 seeds" in store.logged[-1][1]["harness.sequential.reason"]


def test_a_resume_continues_the_targets_it_had(spec, monkeypatch) -> None:
    store = Store({}, sd=0.003)
    runs = plan_runs(spec, "fingerprint", 28)
    store.enqueue([r for r in runs if r.replicate < 5])  # a stopped study: 5 seeds per point already trained
    store.drain(0)
    _train(spec, store, monkeypatch)
    assert min(_seeds(store).values()) >= 5


def test_workers_share_a_round(spec, monkeypatch) -> None:
    one = Store({}, sd=0.003)
    _train(spec, one, monkeypatch, workers=1)
    four = Store({}, sd=0.003)
    _train(spec, four, monkeypatch, workers=4)
    assert len(four.logged) <= len(one.logged)


def test_tune_re_check_in_rounds(tmp_path, monkeypatch) -> None:
    """`search.reeval_repeats: {min, max, resolution_pp}`: the top-k re-check is a listed study trained in rounds."""
    from harness.execution.search import reeval_spec
    from harness.study.spec import SequentialRepeats

    text = ("name: ut\nsearch:\n  space: {training.learning_rate: {type: float, low: 0.001, high: 0.01}}\n"
            "  top_k: 3\n  reeval_repeats: {min: 3, max: 6, resolution_pp: 2.0}\n")
    spec = parse_spec(text, tmp_path / "ut.yaml")
    rates = (0.01, 0.005, 0.002)
    top = [{"label": f"top{i}", "overrides": {"training.learning_rate": lr}} for i, lr in enumerate(rates)]
    reeval = reeval_spec(spec, top)
    assert reeval.sequential == SequentialRepeats(min=3, max=6, resolution_pp=2.0) and reeval.design == "listed"
    store = Store({"candidate=top2": -0.2}, sd=0.003)  # top0 and top1 alike, top2 far below
    monkeypatch.setattr(rounds, "study_table", store.table)
    monkeypatch.setattr(rounds.tracking, "log_round", store.log_round)
    decision = rounds.train_in_rounds(plan_runs(reeval, "fp", 28), reeval, None, "0", "p", store.enqueue,
                                      store.drain, 1)
    states = {(c["a"], c["b"]): c["state"] for c in decision["comparisons"]}
    assert states[("top0", "top2")] == "effect" and states[("top1", "top2")] == "effect"
    counts = pd.DataFrame(store.rows).groupby("candidate").size().to_dict()
    assert counts["top2"] == 3 and counts["top0"] == counts["top1"] > 3  # only the open pair trained on


def test_a_round_fills_a_seed_batch(tmp_path) -> None:
    """With `execution.batch_seeds: K` a round adds at least K seeds to a point, so no lane is padded away."""
    text = ("name: sb\nrepeats: {min: 3, max: 12, resolution_pp: 1.0}\nbase: {backend: jax, execution: "
            "{batch_seeds: 4}}\nfactors: {augmentation.enabled: [false, true]}\n")
    spec = parse_spec(text, tmp_path / "sb.yaml")
    points = rounds.design_points(plan_runs(spec, "fp", 28))
    target = dict.fromkeys(points, 3)
    decision = {"comparisons": [{"factor": "augmentation.enabled", "a": "off", "b": "on", "state": "open",
                                 "more_seeds": 1}]}
    assert set(rounds.next_targets(decision, points, target, 12, 1, "factorial").values()) == {7}
    assert set(rounds.next_targets(decision, points, dict.fromkeys(points, 10), 12, 1, "factorial").values()) == {12}
