"""Two trainings side by side: every way they differ, and the study that separates those differences.

`harness explain A B` starts here. A run is known by its resolved config (what `PlannedRun.resolved()` logged),
its data fingerprint and the environment it recorded. `differences` lists what differs, each with its kind
(config, seed, data, model_code, environment); `explain_spec` writes the listed-design study that moves each
config difference from A's value to B's one at a time (and back from B), over shared seed blocks, so the
ordinary queue, workers, resume and MLflow logging train it. Pure: no MLflow, no backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.study import builders
from harness.study.design import apply_overrides
from harness.study.spec import SEED_SOURCES, RunConfig

KINDS = ("config", "seed", "data", "model_code", "environment")
# sources a seed block draws afresh; `split` only when A and B differ in it (else both score the same images)
BLOCK_SOURCES = tuple(s for s in SEED_SOURCES if s != "split")
STAGES = "stages"


@dataclass(frozen=True)
class RunRecord:
    """What explain knows of one side: a stored run (by MLflow run ID) or a config file."""

    label: str  # "A" or "B"
    source: str  # the run ID or the file path, as the user gave it
    resolved: dict[str, Any]
    data_fingerprint: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    accuracy: float | None = None
    weights_hash: str = ""
    builder_ref: str | None = None  # the builder file on this machine whose hash matches the run's, if any
    data: dict[str, Any] | None = None  # the study's `data:` section (absolute paths)
    study: str = ""
    stored: bool = False  # a run in the MLflow store (else a config file)


@dataclass(frozen=True)
class Difference:
    key: str
    kind: str
    a: Any
    b: Any
    varied: bool  # trained both ways by explain (config keys); seeds are the noise; the rest cannot be moved here
    why_not: str = ""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → dotted keys; lists (stages, pipelines) stay whole values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def differences(a: RunRecord, b: RunRecord) -> list[Difference]:
    """Every difference between A and B, config keys first, then seeds, data, model code, environment."""
    found = []
    fa, fb = flatten(a.resolved), flatten(b.resolved)
    builder_changed = fa.get("model.builder") != fb.get("model.builder")
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if va == vb:
            continue
        if key.startswith("seeds."):
            found.append(Difference(key, "seed", va, vb, varied=False, why_not="seeds are the noise"))
        elif key == "model.builder_sha256" and not builder_changed:
            found.append(Difference(key, "model_code", va, vb, varied=False,
                                    why_not="only one version of the builder file is on this machine"))
        elif key == "model.builder_sha256":
            continue  # a different builder: its hash moves with it
        elif key == "model.builder" and (a.builder_ref is None or b.builder_ref is None):
            found.append(Difference(key, "model_code", va, vb, varied=False,
                                    why_not="a builder file with the run's hash is not on this machine"))
        elif key not in fa or key not in fb:  # e.g. augmentation.* beside a builder: a different model kind
            found.append(Difference(key, "config", va, vb, varied=False,
                                    why_not="set in one run's config only; it moves with the model it belongs to"))
        else:
            found.append(Difference(key, "config", va, vb, varied=True))
    if a.data_fingerprint != b.data_fingerprint:
        found.append(Difference("data_fingerprint", "data", a.data_fingerprint, b.data_fingerprint, varied=False,
                                why_not=f"explain trains on A's data (study '{a.study}')"))
    for key in sorted(set(a.environment) & set(b.environment)):
        if a.environment[key] != b.environment[key]:
            found.append(Difference(key, "environment", a.environment[key], b.environment[key], varied=False,
                                    why_not="an environment cannot be switched by a run's config"))
    return found


def run_config(record: RunRecord) -> RunConfig:
    """A run's resolved config back as a `RunConfig` (seeds as given, none fresh): what re-trains it exactly."""
    body = {key: value for key, value in record.resolved.items() if key not in ("seeds", STAGES)}
    model = dict(body.get("model", {}))
    if "builder" in model:
        if record.builder_ref is None:
            raise HarnessError(f"{record.label} ({record.source}): its builder {model['builder']} (sha256 "
                               f"{model.get('builder_sha256', '?')}) is not on this machine; explain needs it to "
                               "train (or pass --no-train)")
        model = {"builder": record.builder_ref, "args": model.get("args", {})}
    body["model"] = model
    stages = record.resolved.get(STAGES) or [{"name": "train", "epochs": 3, "pipeline": []}]
    body[STAGES] = {s["name"]: {"epochs": s["epochs"], "pipeline": s["pipeline"]} for s in stages}
    body["stage_order"] = [s["name"] for s in stages]
    body["seeds"] = {**record.resolved.get("seeds", {}), "fresh": []}
    try:
        return RunConfig.model_validate(body)
    except Exception as err:  # pydantic's ValidationError: a config file with a wrong key or value
        first = str(err).splitlines()
        raise HarnessError(f"{record.label} ({record.source}): not a run config: "
                           f"{' '.join(first[1:3]) if len(first) > 2 else first[0]}") from None


def override_for(key: str, record: RunRecord) -> dict[str, Any]:
    """The dotted RunConfig overrides that give a run `record`'s value of one differing config key."""
    if key == STAGES:
        config = run_config(record)
        return {STAGES: {n: s.model_dump(mode="json") for n, s in config.stages.items()},
                "stage_order": list(config.stage_order)}
    if key == "model.builder":
        return {"model.builder": record.builder_ref}
    return {key: flatten(record.resolved)[key]}


def plan_points(a: RunRecord, b: RunRecord, diffs: list[Difference]) -> tuple[dict[str, dict], dict[str, str]]:
    """Named configurations and the role each plays: A, B, each varied key moved A→B alone (`A+key`), and each
    moved back B→A alone (`B-key`).

    A role whose overrides equal an earlier point's is not trained twice: with one varied key, `A+key` is B and
    `B-key` is A; with two, each `B-key` is the other key's `A+`. So d keys cost at most 2 + 2d points (4 for
    d = 2). Returns (points: name → overrides of A's config, roles: role → the point that plays it).
    """
    varied = [d.key for d in diffs if d.varied]
    to_b = {key: override_for(key, b) for key in varied}
    to_a = {key: override_for(key, a) for key in varied}
    wanted: dict[str, dict[str, Any]] = {"A": {}}
    if varied:
        wanted["B"] = merge(to_b.values())
    wanted.update({f"A+{key}": to_b[key] for key in varied})
    wanted.update({f"B-{key}": merge([*(v for k, v in to_b.items() if k != key), to_a[key]]) for key in varied})
    base = run_config(a)
    points: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    trained: dict[str, str] = {}  # the config a point trains (as JSON) → the point's name
    for role, overrides in wanted.items():
        config = apply_overrides(base, overrides, f"explain {role}").model_dump_json()
        if config not in trained:
            trained[config] = role
            points[role] = overrides
        roles[role] = trained[config]
    return points, roles


def merge(parts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def block_sources(diffs: list[Difference]) -> list[str]:
    """The seed sources each replicate draws afresh. With config differences: every source but `split` (and
    `split` too when A and B differ in it), so effects are averaged over seed noise. With seeds alone differing:
    exactly those sources, so the gap is compared with the noise of runs that differ the way A and B do."""
    seed_diffs = {d.key.removeprefix("seeds.") for d in diffs if d.kind == "seed"}
    if any(d.varied for d in diffs):
        return [s for s in SEED_SOURCES if s in BLOCK_SOURCES or s in seed_diffs]
    return [s for s in SEED_SOURCES if s in seed_diffs]


def explain_spec(name: str, a: RunRecord, b: RunRecord, diffs: list[Difference], repeats: int,
                 tracking_uri: str | None) -> str:
    """The explain study as spec YAML (absolute paths), so workers rebuild it from the run storage like any study.

    Base = A's config. Each replicate is a seed block: the `block_sources` drawn afresh from A's seed values,
    the same draw for every point, so each contrast is paired. When no config key or seed differs, one run of
    A's exact config, seeds and all: does this machine reproduce A?
    """
    config = run_config(a).model_dump(mode="json")
    points, _ = plan_points(a, b, diffs)
    fresh = block_sources(diffs)
    config["seeds"]["fresh"] = fresh
    spec = {
        "name": name,
        "description": f"harness explain {a.source} {b.source}",
        "data": _plain(a.data or {"source": "synthetic"}),
        "design": "listed",
        "repeats": repeats if fresh else 1,
        "base": config,
        "points": points,
        "tracking": {"uri": tracking_uri},
    }
    return yaml.safe_dump(_plain(spec), sort_keys=False, allow_unicode=True)


def builder_ref_for(name: str, sha: str, candidates: list[str]) -> str | None:
    """Among builder refs (absolute `file.py:function` or `module:function`), the one a run with builder `name`
    and source hash `sha` used, if its file is still that version."""
    for ref in candidates:
        try:
            found = builders.identity(ref)
        except HarnessError:
            continue
        if found["builder"] == name and (not sha or found["builder_sha256"] == sha):
            return ref
    return None


def _plain(value: Any) -> Any:
    """Paths → strings, tuples → lists: what yaml.safe_dump writes."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None or k == "uri"}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
