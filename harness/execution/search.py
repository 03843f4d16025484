"""`harness tune`: an Optuna search over a study's config, then a seed-robust re-check of its best configurations.

The search trains every trial with the same seeds, so its ranking mixes real differences with seed luck. The
top-k configurations are therefore re-run with fresh seeds as an ordinary `listed` study (same storage, same
workers, same MLflow logging, resumable), and `analysis.selection` says whether the search's #1 really wins.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from harness import tracking
from harness.errors import HarnessError, SpecError
from harness.execution import run_queue, workers
from harness.execution.prepared import CACHE_DIR, warm_cache
from harness.study.design import (
    CANDIDATE,
    PlannedRun,
    apply_overrides,
    effective_seeds,
    level_label,
    make_run,
    resolve_stages,
)
from harness.study.spec import SEED_SOURCES, ExecutionConfig, ParamSpace, StudySpec, parse_spec

PROCESS_SETTINGS = ("backend", "determinism.op_determinism", "determinism.env_flags", "determinism.intra_op_threads",
                    "determinism.inter_op_threads", "determinism.tf32")
OVERRIDES = run_queue.OVERRIDES  # the searched values as JSON (choices may be lists, which Optuna can't hold)
EPOCHS = "epochs_trained"
PLANNED = "epochs_planned"  # what the trial trains unpruned (epochs may be searched; a plateau: at most max)
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
    """A search trial as a planned run: replicate 0, the base seeds, the searched values as its factors. A trial is
    one training (the pruner follows it epoch by epoch), so it is one at a time whatever `execution` says."""
    config = apply_overrides(spec.base, overrides, "search.space").model_copy(update={"execution": ExecutionConfig()})
    labels = {key: level_label(value) for key, value in overrides.items()}
    return make_run(spec.name, 0, labels, config, effective_seeds(config, 0), resolve_stages(config), fingerprint)


def make_sampler(spec: StudySpec, worker: int) -> Any:
    import optuna

    seed = spec.search.seed + worker
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: parallel workers spread out


def planned_epochs(spec: StudySpec) -> int:
    """The base config's epochs, a plateau stage counted at its `max` (the pruners' resource and warmup)."""
    return sum(stage.max_epochs for stage in resolve_stages(spec.base))


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

    search = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True,
                                 sampler=make_sampler(spec, worker), pruner=make_pruner(spec))
    run_queue.RunQueue(search).claim_kind(run_queue.KIND_TUNE)
    return search


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


def search_worker(storage_url: str, study_name: str, worker: int, cache_dir: Path) -> None:
    """A training process: the process settings come from the spec's base; then optimize until enough trials."""
    from harness.training import determinism

    attached = workers.Attached.connect(storage_url, study_name, None, cache_dir)
    determinism.configure_process(attached.spec.base.determinism, attached.spec.base.backend)
    Searcher(attached, open_search(attached.storage, attached.spec, worker)).optimize()


class Searcher:
    """One worker's view of the search: the attached study, its Optuna study, and the objective."""

    def __init__(self, attached: workers.Attached, search: Any) -> None:
        self.attached, self.spec, self.search = attached, attached.spec, search

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


        overrides = {key: suggest(trial, key, param) for key, param in self.spec.search.space.items()}
        trial.set_user_attr(OVERRIDES, json.dumps(overrides))
        run = trial_run(self.spec, overrides, self.attached.data.fingerprint)

        def report(epoch: int, val_accuracy: float) -> bool:
            trial.report(val_accuracy, epoch)
            return trial.should_prune()

        result = self.attached.train(trial, run, on_epoch=report)
        trial.set_user_attr(EPOCHS, len(result.history))
        # unpruned, a trial trains what it trained (a plateau stage may stop early); pruned, its stages' max bounds it
        unpruned = len(result.history) if result.status != "PRUNED" else sum(s.max_epochs for s in run.stages)
        trial.set_user_attr(PLANNED, unpruned)
        if result.status == "PRUNED":
            raise optuna.TrialPruned(result.failure_reason)
        if result.status != "FINISHED":
            trial.set_user_attr(run_queue.REAL_FAILURE, result.failure_reason)
            return math.nan  # Optuna records a NaN objective as FAIL
        return result.accuracy


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
    repeats = spec.search.reeval_repeats  # an integer, or a sequential plan: rounds until the top-k comparisons settle
    raw |= {"name": f"{spec.name}-reeval", "design": "listed",
            "repeats": repeats if isinstance(repeats, int) else repeats.model_dump(mode="json"),
            "points": {item["label"]: item["overrides"] for item in top},
            "description": f"top {len(top)} configurations of tune study '{spec.name}', fresh seeds"}
    return parse_spec(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), Path(spec.source_path))


def pruning_savings(search: Any) -> dict[str, int]:
    """Epochs the search trained vs what the same trials would have trained without pruning."""
    from optuna.trial import TrialState

    done = [t for t in search.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and PLANNED in t.user_attrs]
    return {"trials": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "epochs_trained": sum(int(t.user_attrs[EPOCHS]) for t in done),
            "epochs_without_pruning": sum(int(t.user_attrs[PLANNED]) for t in done)}


def run_search(study: Any, client: Any, storage: Any, count: int, progress: bool) -> Any:
    """Parent side of the search: MLflow parent, shared attrs, N worker processes; returns the Optuna study."""
    from tqdm import tqdm

    spec, data = study.spec, study.data
    # every pipeline a trial may pick is preprocessed once, here, before any training process starts
    choices = [{}] + [{key: choice} for key, param in spec.search.space.items() for choice in param.choices or []]
    warm_cache(study, [trial_run(spec, values, data.fingerprint) for values in choices])
    search = open_search(storage, spec)
    exp_id, parent_id = workers.publish(run_queue.RunQueue(search), spec, data, client)
    run_queue.fail_stale(search)
    bar = tqdm(total=spec.search.n_trials, unit="trial", desc=spec.name, disable=not progress, file=sys.stderr)

    def show_progress() -> None:
        c = counts(search)
        bar.n = min(c["complete"] + c["pruned"], spec.search.n_trials)
        bar.set_postfix_str(f"pruned {c['pruned']}, failed {c['fail']}", refresh=True)

    try:
        workers.supervise(search_worker, lambda index: (storage.url, spec.name, index, CACHE_DIR.resolve()), count,
                          work_left=lambda: not searched_enough(search, spec.search.n_trials),
                          on_tick=show_progress, what="search")
    except BaseException as err:  # the parent must not stay RUNNING after an interrupt or dead workers
        tracking.finish_parent(client, parent_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        bar.close()
    tracking.mark_orphans(client, exp_id, live_trials=set())
    tracking.finish_parent(client, parent_id)
    return search


def tune(study: Any, client: Any, storage: Any, count: int, progress: bool) -> dict[str, Any]:
    """Search, then re-run the top-k with fresh seeds and pick the seed-robust best; returns the tune result."""
    from harness.analysis.selection import robust_selection
    from harness.execution import runner
    from harness.execution.prepared import prepare

    spec = study.spec
    search = run_search(study, client, storage, count, progress)
    result: dict[str, Any] = {"study": spec.name, "search": counts(search), "pruning": pruning_savings(search)}
    top = top_configs(search, spec.search.top_k)
    if len(top) < 2:
        raise HarnessError(f"only {len(top)} completed trial(s) with distinct configs; the re-evaluation needs 2 "
                           "(raise search.n_trials, or check why trials failed: harness report " + spec.name + ")")
    reeval = prepare(reeval_spec(spec, top))
    table = runner.run_study(reeval, client, storage, count, progress=progress)
    result |= {"reeval_study": reeval.spec.name, "top": top,
               **robust_selection({t["label"]: t["search_accuracy"] for t in top}, table, CANDIDATE)}
    if plan := reeval.spec.sequential:  # which candidates the rounds told apart, as report --resolution-pp says
        from harness.analysis.sequential import decide

        result["reeval_sequential"] = decide(table, plan.resolution_pp, alpha=plan.alpha, max_repeats=plan.max)
    best = next((t for t in top if t["label"] == result["robust_best"]), top[0])
    result["robust_best_config"] = apply_overrides(spec.base, best["overrides"], "search.space").model_dump_json()
    result["parent_run_id"] = search.user_attrs["parent_run_id"]
    best_trial = search.best_trial
    result["best_trial_run_id"] = best_trial.user_attrs.get("mlflow_run_id")
    return result
