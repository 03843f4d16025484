"""StudySpec → the list of planned runs (full factorial or one-factor-at-a-time, times repeats).

Each run is fully resolved here: pipeline and stage names become concrete steps, per-source seeds become
integers. Its `run_key` hashes that resolved config plus the replicate index and the data fingerprint, so a
run's identity, and its result, depend on nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from harness.errors import SpecError
from harness.study import builders, pipeline
from harness.study.roles import factor_role
from harness.study.spec import SEED_SOURCES, Plateau, RunConfig, StudySpec, describe_validation_error

MAX_IMAGE_SIZE = 224  # 2,000 images at 224 px are 400 MB as float32; beyond that a CPU study is hopeless


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int | Plateau  # a fixed count, or a criterion that may end the stage before its `max`
    steps: tuple[pipeline.Step, ...]

    @property
    def plateau(self) -> Plateau | None:
        """The stage's stopping criterion, None for a fixed count."""
        return self.epochs if isinstance(self.epochs, Plateau) else None

    @property
    def max_epochs(self) -> int:
        """Epochs the stage trains at most: its count or its criterion's `max` (what a cosine schedule spans)."""
        return self.epochs.max if isinstance(self.epochs, Plateau) else self.epochs

    def as_dict(self) -> dict[str, Any]:
        """The stage in the resolved config; a criterion with every default filled in, so it enters the keys."""
        epochs = self.plateau.model_dump(mode="json") if self.plateau else self.epochs
        return {"name": self.name, "epochs": epochs, "pipeline": pipeline.pipeline_to_raw(self.steps)}


@dataclass(frozen=True)
class PlannedRun:
    """One training: what it is (config), where it sits in the study (factors, replicate), and its keys."""

    study: str
    replicate: int
    factors: dict[str, str]
    config: RunConfig
    seeds: dict[str, int]
    stages: tuple[Stage, ...]
    config_key: str
    run_key: str
    data_fingerprint: str = ""
    design: str = "factorial"  # the study's design (factorial, one_at_a_time, listed): travels to the runs table
    base_point: bool = False  # a one-at-a-time study's base config, the point every moved level is compared with

    @property
    def roles(self) -> dict[str, str]:
        """Each factor's role for the statistics: seed_source (`seeds.*`), fold (`evaluation.fold`), treatment."""
        return {key: factor_role(key) for key in self.factors}

    @property
    def seed_block(self) -> str:
        """Runs with equal seed blocks drew the same seed for every source (replicate r at every level)."""
        return stable_hash(self.seeds)

    @property
    def batch_key(self) -> str:
        """Runs with equal batch keys differ only in their seeds: one seed batch may train them together."""
        return stable_hash({"config": {**self.resolved(), "seeds": None}, "data": self.data_fingerprint})

    @property
    def name(self) -> str:
        """A readable MLflow run name from the factors that vary, e.g. `a.epochs=2 · b.epochs=3 · rep=0`."""
        short = short_factor_names(list(self.factors))
        parts = [f"{short[key]}={value}" for key, value in self.factors.items()]
        return " · ".join([*parts, f"rep={self.replicate}"])

    def resolved(self) -> dict[str, Any]:
        """The config that determines the result: logged as params and hashed into the keys."""
        body = self.config.model_dump(mode="json", exclude={"pipelines", "stages", "stage_order", "seeds"})
        if self.config.execution.batch_seeds == 1:  # one run at a time: keys stay what they were before batching
            del body["execution"]
        if not self.config.evaluation.test_shifts:  # and what they were before test-time shifts
            del body["evaluation"]["test_shifts"]
        model = self.config.model
        if model.builder is None:  # the built-in CNN's keys stay what they were before user models existed
            del body["model"]["builder"], body["model"]["args"]
        else:  # the builder's own settings, and augmentation (the builder's business, via seeds.augment)
            body["model"] = {**builders.identity(model.builder), "args": body["model"]["args"]}
            del body["augmentation"]
        return {**body, "seeds": self.seeds, "stages": [s.as_dict() for s in self.stages]}

    def params(self) -> dict[str, Any]:
        """`resolved()` with dotted keys (`model.filters`): MLflow's params and the runs table's columns."""
        import pandas as pd

        return pd.json_normalize(self.resolved(), sep=".").to_dict("records")[0]


def short_factor_names(keys: list[str]) -> dict[str, str]:
    """Each dotted factor key → its shortest trailing part that no other key's short name shares.

    `augmentation.enabled` alone reads `enabled`; `stages.a.epochs` beside `stages.b.epochs` reads `a.epochs`
    and `b.epochs`; `epochs` beside `stages.a.epochs` keeps `epochs` while the other becomes `a.epochs`.
    Distinct keys always get distinct names (at worst the whole key).
    """
    parts = {key: key.split(".") for key in keys}
    depth = dict.fromkeys(keys, 1)

    def shown(key: str) -> str:
        return ".".join(parts[key][-depth[key] :])

    while True:
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(shown(key), []).append(key)
        clashing = [key for group in groups.values() if len(group) > 1 for key in group]
        longer = [key for key in clashing if depth[key] < len(parts[key])]
        if not longer:
            return {key: shown(key) for key in keys}
        for key in longer:
            depth[key] += 1


CANDIDATE = "candidate"  # the factor a `listed` design varies: the name of each configuration


def _design_configs(spec: StudySpec) -> list[tuple[dict[str, str], RunConfig]]:
    """Each design point's labels and its config, before stages resolve against the data."""
    points = []
    for factor_values in _design_points(spec):
        if spec.design == "listed":
            name = factor_values[CANDIDATE]
            points.append(({CANDIDATE: name}, apply_overrides(spec.base, spec.points[name], f"points.{name}")))
        else:
            labels = {key: level_label(value) for key, value in factor_values.items()}
            points.append((labels, apply_overrides(spec.base, factor_values)))
    return points


def study_backends(spec: StudySpec) -> list[str]:
    """The Keras backends the study's runs use, known before its data loads: the fork server imports them early."""
    return sorted({config.backend for _, config in _design_configs(spec)})


def plan_runs(spec: StudySpec, data_fingerprint: str, image_size: int = 28,
              environments: dict[str, dict[str, str]] | None = None) -> list[PlannedRun]:
    """Every run the study asks for, in a stable order (`image_size`: the data's side length in px).

    `environments` (backend → `env.kernel_environment`) enter the run keys: `harness run` passes this machine's,
    a worker the ones the study was enqueued with (so it trains those runs, and records its own environment).
    A spec error found here (a stage, pipeline or factor reference) names the spec file, as a parse error does.
    """
    try:
        return _plan(spec, data_fingerprint, image_size, environments)
    except SpecError as err:
        raise in_spec_file(spec, err) from None


def in_spec_file(spec: StudySpec, err: SpecError) -> SpecError:
    """The error with the spec file in front, as a parse error has it (unless it names the file already)."""
    where = spec.source_path
    return err if where is None or str(err).startswith(str(where)) else SpecError(f"{where}: {err}")


def _plan(spec: StudySpec, data_fingerprint: str, image_size: int,
          environments: dict[str, dict[str, str]] | None) -> list[PlannedRun]:
    runs = []
    for index, (labels, config) in enumerate(_design_configs(spec)):
        stages = resolve_stages(config, image_size)
        environment = (environments or {}).get(config.backend)
        base_point = spec.design == "one_at_a_time" and index == 0  # _design_points puts the base first
        for replicate in range(spec.planned_repeats):
            seeds = effective_seeds(config, replicate)
            runs.append(make_run(spec.name, replicate, labels, config, seeds, stages, data_fingerprint,
                                 design=spec.design, environment=environment, base_point=base_point))
    _refuse_duplicates(runs)
    return runs


def _refuse_duplicates(runs: list[PlannedRun]) -> None:
    """Two levels that resolve to the same training (8 vs 8.0, an unused pipeline) would run twice as one."""
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        if run.run_key in seen:
            first = seen[run.run_key]
            raise SpecError(
                f"factors: levels {first.factors} and {run.factors} resolve to the same training; "
                "drop one, or make the level change something the run uses"
            )
        seen[run.run_key] = run


def _design_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Factor settings per design point: every combination, or one factor moved at a time from the base."""
    if spec.design == "listed":
        if not spec.points or spec.factors:
            raise SpecError("design 'listed' needs 'points' (named configurations) and no 'factors'")
        return [{CANDIDATE: name} for name in spec.points]
    for key, values in spec.factors.items():
        for value in values:
            apply_overrides(spec.base, {key: value})  # validate each level alone for a precise error
    if spec.design == "factorial":
        keys = list(spec.factors)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.factors.values())]
    base_values = {key: _get_path(spec.base.model_dump(mode="json"), key) for key in spec.factors}
    points = [dict(base_values)]
    for key, values in spec.factors.items():
        for value in values:
            if value != base_values[key]:
                points.append({**base_values, key: value})
    return points


def apply_overrides(base: RunConfig, values: dict[str, Any], where: str = "factors") -> RunConfig:
    """The base config with dotted keys set; an unknown key or bad value is a SpecError naming `where`."""
    raw = base.model_dump(mode="json")
    for key, value in values.items():
        _set_path(raw, key, value, where)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{describe_validation_error(err, RunConfig, prefix=where)}") from None


def _get_path(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set_path(raw: dict[str, Any], dotted: str, value: Any, where: str = "factors") -> None:
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"{where}.{dotted}: '{'.'.join(parts[: i + 1])}' is not a section with keys")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def resolve_stages(config: RunConfig, image_size: int = 28) -> tuple[Stage, ...]:
    """Stage names → stages with concrete steps; every stage must feed the model the same image size.

    Every pipeline under `pipelines` is validated, used or not: a typo in one a later edit switches on must not
    wait until then to be found.
    """
    for name, raw in config.pipelines.items():
        pipeline.parse_pipeline(raw, f"pipelines.{name}")
    stages = []
    for name in config.stage_order:
        if name not in config.stages:
            raise SpecError(f"stage_order: unknown stage '{name}'; defined: {', '.join(config.stages)}")
        stage = config.stages[name]
        where = f"stages.{name}.pipeline"
        raw_steps = stage.pipeline
        if isinstance(raw_steps, str):
            if raw_steps not in config.pipelines:
                allowed = ", ".join(config.pipelines) or "none defined under 'pipelines'"
                raise SpecError(f"{where}: unknown pipeline '{raw_steps}'; defined: {allowed}")
            where, raw_steps = f"pipelines.{raw_steps}", config.pipelines[raw_steps]
        stages.append(Stage(name, stage.epochs, pipeline.parse_pipeline(raw_steps, where)))
    sizes = {s.name: pipeline.output_size(s.steps, image_size) for s in stages}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{name}: {size}px" for name, size in sizes.items())
        raise SpecError(f"stage_order: stages must produce one image size for one model; got {shown}")
    size = next(iter(sizes.values()))
    if size > MAX_IMAGE_SIZE:
        raise SpecError(f"stages: pipelines upscale to {size}px; allowed: at most {MAX_IMAGE_SIZE}px")
    if config.model.builder is None and size // 2**config.model.depth < 1:
        raise SpecError(
            f"model.depth: {config.model.depth} pooling blocks shrink {size}px images to nothing; "
            f"allowed: at most {size.bit_length() - 1}"
        )
    return tuple(stages)


def effective_seeds(config: RunConfig, replicate: int) -> dict[str, int]:
    """Sources in `fresh` get a seed derived from (value, replicate, source); the others keep their value."""
    seeds = {}
    for index, source in enumerate(SEED_SOURCES):
        value = getattr(config.seeds, source)
        if source in config.seeds.fresh:
            value = int(np.random.SeedSequence([value, replicate, index]).generate_state(1)[0] >> 1)
        seeds[source] = value
    return seeds


def make_run(study, replicate, labels, config, seeds, stages, fingerprint, design="factorial",
             environment: dict[str, str] | None = None, base_point: bool = False) -> PlannedRun:
    """A planned run and its keys: config_key (config + data), run_key (+ replicate, + the kernel environment
    when given: the same config under other libraries is another run, never a reuse)."""
    draft = PlannedRun(study, replicate, labels, config, seeds, stages, "", "")
    config_key = stable_hash({"config": draft.resolved(), "data": fingerprint})
    identity = {"config_key": config_key, "replicate": replicate}
    run_key = stable_hash({**identity, "environment": environment} if environment else identity)
    return PlannedRun(study, replicate, labels, config, seeds, stages, config_key, run_key, fingerprint, design,
                      base_point)


def stable_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def level_label(value: Any) -> str:
    """How a factor level reads in tables and run names: on/off, a→b for orders, plain otherwise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "→".join(level_label(v) for v in value) if value else "none"
    if isinstance(value, dict):
        parts = [
            f"{key}({level_label(inner)})" if isinstance(inner, dict) else f"{key}={level_label(inner)}"
            for key, inner in sorted(value.items())
        ]
        return ",".join(parts)
    return str(value)


def process_key(run: PlannedRun) -> tuple[str, bool, bool, int, int, bool]:
    """Settings a backend fixes per process: runs differing here need separate processes."""
    det = run.config.determinism
    return (run.config.backend, det.op_determinism, det.env_flags, det.intra_op_threads, det.inter_op_threads, det.tf32)
