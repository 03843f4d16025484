"""`harness tune`: an Optuna search over a study's config, then a seed-robust re-check of its best configurations.

The search trains every trial with the same seeds, so its ranking mixes real differences with seed luck. The
top-k configurations are therefore re-run with fresh seeds as an ordinary `listed` study (same storage, same
workers, same MLflow logging, resumable), and `robust_selection` says whether the search's #1 really wins.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import engine, tracking
from harness.design import (
    CANDIDATE,
    PlannedRun,
    apply_overrides,
    effective_seeds,
    level_label,
    make_run,
    resolve_stages,
)
from harness.errors import HarnessError, SpecError
from harness.spec import SEED_SOURCES, ParamSpace, StudySpec, parse_spec

PROCESS_SETTINGS = ("backend", "determinism.op_determinism", "determinism.env_flags", "determinism.intra_op_threads",
                    "determinism.inter_op_threads", "determinism.tf32")
OVERRIDES = "overrides"  # trial user attr: the searched values as JSON (choices may be lists, which Optuna can't hold)
EPOCHS = "epochs_trained"
PLANNED = "epochs_planned"  # what the trial would have trained unpruned (epochs may be searched)
SEED_OFFSET = 1  # re-evaluation seeds start here above the base seeds, so no re-run repeats the search's seeds


def check_search(spec: StudySpec) -> None:
    """Refuse a search that cannot run, before anything is stored: every bound and choice must make a valid run."""
    if spec.search is None:
        raise SpecError(f"{spec.source_path}: 'tune' needs a 'search' section (space, n_trials, ...)")
    for key, param in spec.search.space.items():
        if key.startswith(PROCESS_SETTINGS):
            raise SpecError(f"search.space.{key}: fixed per training process, cannot be searched; vary it in a "
                            "`run` study instead")
        if param.log and param.step:
            raise SpecError(f"search.space.{key}: 'log' and 'step' cannot be combined")
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for value in values:
            value = int(value) if param.type == "int" else value
            resolve_stages(apply_overrides(spec.base, {key: value}, "search.space"))


def suggest(trial: Any, key: str, param: ParamSpace) -> Any:
    if param.type == "float":
        return trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)
    if param.type == "int":
        return trial.suggest_int(key, int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    labels = [level_label(choice) for choice in param.choices]
    return param.choices[labels.index(trial.suggest_categorical(key, labels))]


def trial_run(spec: StudySpec, overrides: dict[str, Any], fingerprint: str) -> PlannedRun:
    """A search trial as a planned run: replicate 0, the base seeds, the searched values as its factors."""
    config = apply_overrides(spec.base, overrides, "search.space")
    labels = {key: level_label(value) for key, value in overrides.items()}
    return make_run(spec.name, 0, labels, config, effective_seeds(config, 0), resolve_stages(config), fingerprint)


def make_sampler(spec: StudySpec, worker: int) -> Any:
    import optuna

    seed = spec.search.seed + worker
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: parallel workers spread out


def planned_epochs(spec: StudySpec) -> int:
    return sum(stage.epochs for stage in resolve_stages(spec.base))


def warmup_epochs(spec: StudySpec) -> int:
    """Epochs every trial trains before it may be pruned."""
    return spec.search.warmup_epochs or max(1, planned_epochs(spec) // 3)


def make_pruner(spec: StudySpec) -> Any:
    import optuna

    epochs, warmup = planned_epochs(spec), warmup_epochs(spec)
    return {
        # reported steps are epochs counted from 1; Optuna prunes from step n_warmup_steps on
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=max(epochs, warmup + 1)),
        "none": optuna.pruners.NopPruner,
    }[spec.search.pruner]()


def open_search(storage: Any, spec: StudySpec, worker: int = 0) -> Any:
    import optuna

    return optuna.create_study(study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=make_sampler(spec, worker), pruner=make_pruner(spec))


def counts(search: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in search.get_trials(deepcopy=False)]
    return {name.lower(): states.count(getattr(TrialState, name)) for name in ("COMPLETE", "PRUNED", "FAIL",
                                                                               "RUNNING", "WAITING")}


def searched_enough(search: Any, n_trials: int, count_running: bool = False) -> bool:
    """n trials completed or pruned; failures count too once they reach n, so a broken space cannot loop forever.

    A worker deciding whether to start another trial counts the other workers' running ones too; otherwise every
    worker still running when the n-th finishes has started one more, and the search overshoots n.
    """
    c = counts(search)
    running = c["running"] if count_running else 0
    return c["complete"] + c["pruned"] + running >= n_trials or c["fail"] >= n_trials


def tune_worker(storage_url: str, study_name: str, worker: int, cache_dir: Path) -> None:
    """A training process: the process settings come from the spec's base; then optimize until enough trials."""
    import signal

    from harness import determinism, runner

    signal.signal(signal.SIGINT, runner.defer_interrupt)
    storage = engine.open_storage(storage_url)
    attrs = engine.open_queue(storage, study_name, create=False).user_attrs
    spec = parse_spec(attrs["spec_text"], Path(attrs["spec_path"]))
    determinism.configure_process(spec.base.determinism, spec.base.backend)
    try:
        Searcher.connect(spec, storage, attrs, cache_dir, worker).optimize()
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


class Searcher:
    """One worker's view of the search: the data, the MLflow parent, and the objective."""

    def __init__(self, spec: StudySpec, search: Any, client: Any, data: Any, attrs: dict, cache_dir: Path) -> None:
        from harness import env

        self.spec, self.search, self.client, self.data, self.cache_dir = spec, search, client, data, cache_dir
        self.exp_id, self.parent_id = attrs["experiment_id"], attrs["parent_run_id"]
        self.environment = env.snapshot()

    @classmethod
    def connect(cls, spec: StudySpec, storage: Any, attrs: dict, cache_dir: Path, worker: int) -> Searcher:
        from harness.runner import load_study_data

        data = load_study_data(spec.data)
        if data.fingerprint != attrs["data_fingerprint"]:
            raise HarnessError(
                f"data here ({data.fingerprint}) differs from the search's ({attrs['data_fingerprint']})")
        client = tracking.connect(attrs["tracking_uri"])
        return cls(spec, open_search(storage, spec, worker), client, data, attrs, cache_dir)

    def optimize(self) -> None:
        import optuna

        def stop_when_enough(study: Any, trial: Any) -> None:
            if searched_enough(study, self.spec.search.n_trials, count_running=True):
                study.stop()

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        if not searched_enough(self.search, self.spec.search.n_trials, count_running=True):
            self.search.optimize(self.objective, timeout=self.spec.search.timeout_s, callbacks=[stop_when_enough],
                                 gc_after_trial=False)

    def objective(self, trial: Any) -> float:
        import optuna

        from harness.train import train_run

        overrides = {key: suggest(trial, key, param) for key, param in self.spec.search.space.items()}
        trial.set_user_attr(OVERRIDES, json.dumps(overrides))
        run = trial_run(self.spec, overrides, self.data.fingerprint)

        def report(epoch: int, val_accuracy: float) -> bool:
            trial.report(val_accuracy, epoch)
            return trial.should_prune()

        with engine.heartbeat(trial):
            run_id = tracking.start_child(self.client, self.exp_id, self.parent_id, run, self.environment,
                                          trial.number)
            trial.set_user_attr("mlflow_run_id", run_id)
            result = train_run(run, self.data.ids, self.data.digits, self.images_for, on_epoch=report)
            tracking.finish_child(self.client, run_id, result)
        trial.set_user_attr(EPOCHS, len(result.history))
        trial.set_user_attr(PLANNED, sum(stage.epochs for stage in run.stages))
        if result.status == "PRUNED":
            raise optuna.TrialPruned(result.failure_reason)
        if result.status != "FINISHED":
            trial.set_user_attr(engine.REAL_FAILURE, result.failure_reason)
            return math.nan  # Optuna records a NaN objective as FAIL
        return result.accuracy

    def images_for(self, stage: Any) -> np.ndarray:
        return self.data.images_for(stage, self.cache_dir)


def top_configs(search: Any, k: int) -> list[dict[str, Any]]:
    """The k best completed trials with distinct configurations, best first."""
    from optuna.trial import TrialState

    best, seen = [], set()
    for trial in sorted(search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value):
        if trial.user_attrs[OVERRIDES] in seen:
            continue
        seen.add(trial.user_attrs[OVERRIDES])
        best.append({"label": f"top{len(best) + 1}-trial{trial.number}", "trial": trial.number,
                     "search_accuracy": trial.value, "overrides": json.loads(trial.user_attrs[OVERRIDES])})
        if len(best) == k:
            break
    return best


def reeval_spec(spec: StudySpec, top: list[dict[str, Any]]) -> StudySpec:
    """The top configurations as a `listed` study with fresh seeds for every source, the split included."""
    import yaml

    raw = spec.model_dump(mode="json", exclude={"search", "factors", "points", "design", "repeats", "name"})
    seeds = raw["base"]["seeds"]
    for source in SEED_SOURCES:
        seeds[source] = min(seeds[source] + SEED_OFFSET, 2**32 - 1)
    seeds["fresh"] = list(SEED_SOURCES)
    raw |= {"name": f"{spec.name}-reeval", "design": "listed", "repeats": spec.search.reeval_repeats,
            "points": {item["label"]: item["overrides"] for item in top},
            "description": f"top {len(top)} configurations of tune study '{spec.name}', fresh seeds"}
    return parse_spec(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), Path(spec.source_path))


def robust_selection(search_accuracy: dict[str, float], table: pd.DataFrame) -> dict[str, Any]:
    """Does the search's #1 beat the others beyond seed noise? Per candidate: re-run mean, 95% CI, winner's curse.

    `search_accuracy` is ordered best first; `table` is a runs table with a `candidate` column.
    """
    import scipy.stats as ss

    from harness.stats import groups_of, holm, num, pairwise_comparison, quiet

    groups = groups_of(table, CANDIDATE)
    rows = []
    for label, searched in search_accuracy.items():
        x = groups.get(label, np.array([]))
        ci = None
        if len(x) >= 2 and np.ptp(x) > 0:
            with quiet():
                interval = ss.ttest_1samp(x, 0.0).confidence_interval(0.95)
            ci = [num(interval.low), num(interval.high)]
        elif len(x) >= 1:
            ci = [num(x.mean()), num(x.mean())]
        mean = num(x.mean()) if len(x) else None
        rows.append({"candidate": label, "n": int(len(x)), "search_accuracy": num(searched), "mean": mean,
                     "std": num(x.std(ddof=1)) if len(x) >= 2 else None, "ci": ci,
                     "winners_curse": None if mean is None else num(searched - mean)})
    first = rows[0]["candidate"]
    pairs = [pairwise_comparison(first, groups[first], r["candidate"], groups[r["candidate"]])
             for r in rows[1:] if first in groups and r["candidate"] in groups]
    for key in ("welch_p", "mw_p"):
        for pair, p in zip(pairs, holm([pair[key] for pair in pairs]), strict=True):
            pair[key + "_holm"] = p
    ranked = [r for r in rows if r["ci"] is not None]
    robust = max(ranked, key=lambda r: (r["ci"][0], r["mean"]))["candidate"] if ranked else None
    wins = [p for p in pairs if p["mean_diff"] is not None and p["mean_diff"] > 0
            and p["welch_p_holm"] is not None and p["welch_p_holm"] < 0.05]
    return {"candidates": rows, "top1_vs_others": pairs, "robust_best": robust,
            "top1_beats_all": bool(pairs) and len(wins) == len(pairs), "verdict": _verdict(rows, pairs, robust)}


def _verdict(rows: list[dict], pairs: list[dict], robust: str | None) -> list[str]:
    first = rows[0]
    lines = []
    if first["mean"] is not None:
        lines.append(f"The search's #1 ({first['candidate']}) scored {100 * first['search_accuracy']:.2f}% in the "
                     f"search and {100 * first['mean']:.2f}% over {first['n']} fresh seeds: winner's curse "
                     f"{100 * first['winners_curse']:+.2f} pp.")
    for pair in pairs:
        p = pair["welch_p_holm"]
        wins = p is not None and p < 0.05 and pair["mean_diff"] > 0
        verdict = "beyond seed noise" if wins else "not beyond seed noise"
        lines.append(f"#1 vs {pair['b']}: {100 * (pair['mean_diff'] or 0):+.2f} pp (Welch, Holm p="
                     f"{'n/a' if p is None else f'{p:.3g}'}) — {verdict}.")
    if robust is not None:
        best = next(r for r in rows if r["candidate"] == robust)
        lines.append(f"Seed-robust best (highest lower 95% bound): {robust}, {100 * best['mean']:.2f}% "
                     f"(95% CI {100 * best['ci'][0]:.2f}–{100 * best['ci'][1]:.2f}%).")
    return lines


def pruning_savings(search: Any) -> dict[str, int]:
    """Epochs the search trained vs what the same trials would have trained without pruning."""
    from optuna.trial import TrialState

    done = [t for t in search.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and PLANNED in t.user_attrs]
    return {"trials": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "epochs_trained": sum(int(t.user_attrs[EPOCHS]) for t in done),
            "epochs_without_pruning": sum(int(t.user_attrs[PLANNED]) for t in done)}


def run_search(study: Any, client: Any, storage: Any, workers: int, progress: bool) -> Any:
    """Parent side of the search: MLflow parent, shared attrs, N worker processes; returns the Optuna study."""
    from tqdm import tqdm

    from harness.runner import CACHE_DIR, warm_cache

    spec, data = study.spec, study.data
    # every pipeline a trial may pick is preprocessed once, here, before any training process starts
    choices = [{}] + [{key: choice} for key, param in spec.search.space.items() for choice in param.choices or []]
    warm_cache(study, [trial_run(spec, values, data.fingerprint) for values in choices])
    spec_path = str(Path(spec.source_path).resolve())
    exp_id = tracking.experiment_id(client, spec.name)
    parent_id = tracking.study_parent(client, exp_id, spec.name, spec.source_text, spec_path)
    search = open_search(storage, spec)
    attrs = {"spec_text": spec.source_text, "spec_path": spec_path,
             "data_fingerprint": data.fingerprint, "tracking_uri": client.tracking_uri, "experiment_id": exp_id,
             "parent_run_id": parent_id}
    for key, value in attrs.items():
        search.set_user_attr(key, value)
    engine.fail_stale(search)
    context = mp.get_context("spawn")
    processes = [context.Process(target=tune_worker, args=(storage.url, spec.name, i, CACHE_DIR.resolve()),
                                 daemon=True) for i in range(workers)]
    bar = tqdm(total=spec.search.n_trials, unit="trial", desc=spec.name, disable=not progress, file=sys.stderr)
    try:
        for process in processes:
            process.start()
        while any(process.is_alive() for process in processes):
            time.sleep(1.0)
            c = counts(search)
            bar.n = min(c["complete"] + c["pruned"], spec.search.n_trials)
            bar.set_postfix_str(f"pruned {c['pruned']}, failed {c['fail']}", refresh=True)
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=60)
        tracking.finish_parent(client, parent_id, "KILLED")
        raise
    finally:
        bar.close()
        for process in processes:
            if process.is_alive():
                process.terminate()
    tracking.mark_orphans(client, exp_id, live_trials=set())
    if any(process.exitcode != 0 for process in processes) and not searched_enough(search, spec.search.n_trials):
        tracking.finish_parent(client, parent_id, "FAILED")
        codes = sorted({process.exitcode for process in processes})
        raise HarnessError(f"search processes died (exit codes {codes}); run `harness tune` again to resume")
    tracking.finish_parent(client, parent_id)
    return search


def tune(study: Any, client: Any, storage: Any, workers: int, progress: bool, out_dir: Path) -> dict[str, Any]:
    """Search, re-run the top-k with fresh seeds, decide the seed-robust best, and record it on the parent run."""
    from harness import runner

    spec = study.spec
    search = run_search(study, client, storage, workers, progress)
    result: dict[str, Any] = {"study": spec.name, "search": counts(search), "pruning": pruning_savings(search)}
    top = top_configs(search, spec.search.top_k)
    if len(top) < 2:
        raise HarnessError(f"only {len(top)} completed trial(s) with distinct configs; the re-evaluation needs 2 "
                           "(raise search.n_trials, or check why trials failed: harness report " + spec.name + ")")
    reeval = runner.prepare(reeval_spec(spec, top))
    table = runner.run_study(reeval, client, storage, workers, progress=progress)
    result |= {"reeval_study": reeval.spec.name, "top": top,
               **robust_selection({t["label"]: t["search_accuracy"] for t in top}, table)}
    _record(client, spec, search, result, out_dir)
    return result


def _record(client: Any, spec: StudySpec, search: Any, result: dict[str, Any], out_dir: Path) -> None:
    """tune.json and tune.md in the report folder and on the parent run; the robust best as parent tags (predict)."""
    best = next((t for t in result["top"] if t["label"] == result["robust_best"]), result["top"][0])
    config = apply_overrides(spec.base, best["overrides"], "search.space")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tune.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    (out_dir / "tune.md").write_text(render(result), encoding="utf-8")
    parent_id = search.user_attrs["parent_run_id"]  # set by run_search
    client.log_artifact(parent_id, str(out_dir / "tune.json"), "tune")
    client.log_artifact(parent_id, str(out_dir / "tune.md"), "tune")
    client.set_tag(parent_id, "harness.robust_best", best["label"])
    client.set_tag(parent_id, "harness.robust_best_config", config.model_dump_json())
    best_trial = search.best_trial
    if "mlflow_run_id" in best_trial.user_attrs:
        client.set_tag(best_trial.user_attrs["mlflow_run_id"], "harness.best_trial", "true")


def render(result: dict[str, Any]) -> str:
    pruning = result["pruning"]
    lines = [f"# tune: {result['study']}", "", "## Verdict", "", *[f"- {line}" for line in result["verdict"]],
             f"- Pruning: {pruning['pruned']}/{pruning['trials']} trials pruned; {pruning['epochs_trained']} epochs "
             f"trained instead of {pruning['epochs_without_pruning']} for the same trials without pruning.", "",
             "## Re-evaluation with fresh seeds", "",
             "| candidate | search % | n | re-run mean % | 95% CI % | winner's curse pp |", "|---|---|---|---|---|---|"]
    for row in result["candidates"]:
        ci = "n/a" if row["ci"] is None else f"{100 * row['ci'][0]:.2f}–{100 * row['ci'][1]:.2f}"
        mean = "n/a" if row["mean"] is None else f"{100 * row['mean']:.2f}"
        curse = "n/a" if row["winners_curse"] is None else f"{100 * row['winners_curse']:+.2f}"
        lines.append(f"| {row['candidate']} | {100 * row['search_accuracy']:.2f} | {row['n']} | {mean} | {ci} | "
                     f"{curse} |")
    lines += ["", "## Configurations", ""]
    lines += [f"- {t['label']}: `{json.dumps(t['overrides'])}`" for t in result["top"]]
    lines += ["", f"Re-evaluation runs: MLflow experiment `{result['reeval_study']}` "
              f"(`python -m harness report {result['reeval_study']}` for the full statistics)."]
    return "\n".join(lines) + "\n"
