"""`harness explain A B`: two runs that differ, and why: which differences account for the gap, against seed noise.

A and B are MLflow run IDs of training runs (the UI shows them) or run config files (a run's config.json artifact,
or a mapping with its `resolved` config and optionally `data`, `accuracy`, `environment`). Every input is
checked before anything is written. The runs that separate the differences form an ordinary study
(`explain-A-B`, design `listed`), trained through the same queue, workers and MLflow store as `harness run`, so
a stopped explain resumes where it was; its parent run is named `explain:A..B` and carries explain.md/json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, SpecError


def explain(args: argparse.Namespace) -> int:
    from harness.commands.common import positive
    from harness.report import explain as write_up
    from harness.study import compare

    if args.repeats < 2:
        raise HarnessError(f"--repeats: got {args.repeats}; allowed: 2 or more (seed noise needs replicates)")
    positive(args.workers, "--workers")
    if args.steps is not None:
        positive(args.steps, "--steps")
    store = _Store(args.tracking_uri)
    a, b = (load_record(text, label, store) for text, label in ((args.a, "A"), (args.b, "B")))
    diffs = compare.differences(a, b)
    name = f"explain-{_short(a)}-{_short(b)}"
    out_dir = args.out or Path("reports") / name
    identical = bool(a.weights_hash) and a.weights_hash == b.weights_hash
    context: dict[str, Any] = {"identical": identical, "observed_gap": _gap(a, b), "repeats": args.repeats,
                               "block_sources": compare.block_sources(diffs), "study": name}
    nondeterministic = not diffs and not identical and bool(a.weights_hash and b.weights_hash)
    if args.trace or nondeterministic:  # before the explain study, so its parent run gets the divergence tags
        try:
            context["trace"] = _trace(a, b, args.steps, diffs)
        except HarnessError as err:
            if args.trace:  # asked for: its failure is the answer
                raise
            context["trace_failed"] = str(err)  # automatic: the rest of the explanation still stands
    attribution = None
    if not identical:
        if args.no_train:
            attribution = _from_store(a, b, diffs, store, context)
        else:
            attribution = _train(name, a, b, diffs, args, store, context)
    weights_differ = bool(a.weights_hash and b.weights_hash) and not identical
    context["divergence_note"] = _divergence_note(diffs, context.get("trace"), weights_differ) or (
        f"A and B have the same config, seeds and environment but different weights; not replayed to find where "
        f"they part: {context.pop('trace_failed')}" if "trace_failed" in context else None)
    ex = write_up.assemble(a, b, diffs, attribution, **context)
    paths = write_up.write(ex, out_dir)
    if context.get("experiment"):  # the same files on the explain parent run
        from harness import tracking

        tracking.attach_report(store.client, context["experiment"], out_dir)
    print("\n".join(ex["verdict"]))
    if ex["differences"]:
        print("\n" + "\n".join(write_up.table_markdown(ex["differences"])))
    print(f"\nexplain: {paths[0]}")
    return 0


class _Store:
    """The MLflow store, connected on first use (config files alone never touch it)."""

    def __init__(self, uri: str | None) -> None:
        self.uri, self._client = uri, None

    def adopt(self, client: Any) -> None:
        self._client = client

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Any:
        if self._client is None:
            from harness import tracking

            self._client = tracking.connect(self.uri, create=False)  # run IDs live in a store that exists
        return self._client


def load_record(text: str, label: str, store: _Store) -> Any:
    """A run ID → its stored training; a path → a config file; anything else, one line."""
    from harness import tracking

    if re.fullmatch(tracking.RUN_ID_PATTERN, text) and not Path(text).exists():
        return _stored(text, label, store)
    if Path(text).suffix in (".json", ".yaml", ".yml") or Path(text).exists():
        return _config_file(Path(text), label)
    raise HarnessError(f"{label}: '{text}' is neither an MLflow run ID (32 hex characters) nor a run config file "
                       "(.json or .yaml)")


def _stored(run_id: str, label: str, store: _Store) -> Any:
    from harness import tracking
    from harness.study import compare
    from harness.study.spec import parse_spec

    info = tracking.training_run(store.client, run_id, label)
    data, candidates = None, []
    if info["spec_text"]:
        try:
            spec = parse_spec(info["spec_text"], Path(info["spec_path"] or "study.yaml"))
        except SpecError:
            spec = None  # a spec this version cannot read: its runs are still compared, not re-trained
        if spec is not None:
            data = spec.data.model_dump(mode="json", exclude_defaults=True)
            candidates = _builder_refs(spec)
    model = info["resolved"].get("model", {})
    ref = compare.builder_ref_for(model["builder"], model.get("builder_sha256", ""), candidates) \
        if "builder" in model else None
    return compare.RunRecord(label, run_id, info["resolved"], info["data_fingerprint"], info["environment"],
                             info["accuracy"], info["weights_hash"], ref, data, info["study"], stored=True)


def _builder_refs(spec: Any) -> list[str]:
    refs = [spec.base.model.builder, *spec.factors.get("model.builder", []),
            *(point.get("model.builder") for point in spec.points.values())]
    return [ref for ref in refs if isinstance(ref, str)]


def _config_file(path: Path, label: str) -> Any:
    """A run's config.json, or a YAML/JSON mapping with `resolved` (or the resolved config itself)."""
    from harness.study import builders, compare
    from harness.study.sections import DataConfig

    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise HarnessError(f"{label}: {path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HarnessError(f"{label}: {path}: unreadable run config: {first}") from None
    resolved = raw.get("resolved", raw) if isinstance(raw, dict) else None
    if not isinstance(resolved, dict) or not isinstance(resolved.get("seeds"), dict):
        raise HarnessError(f"{label}: {path}: not a run config; allowed: a run's config.json artifact, or a mapping "
                           "with 'resolved' (its seeds, model, training, stages, ...)")
    data = None
    if isinstance(raw.get("data"), dict):
        try:
            config = DataConfig.model_validate(raw["data"])
        except Exception as err:  # pydantic's ValidationError
            raise HarnessError(f"{label}: {path}: data: {str(err).splitlines()[-2].strip()}") from None
        if config.path is not None and not config.path.is_absolute():
            config = config.model_copy(update={"path": (path.parent / config.path).resolve()})
        data = config.model_dump(mode="json", exclude_defaults=True)
    model, ref = resolved.get("model", {}), None
    if isinstance(model, dict) and "builder" in model:
        builder = str(model["builder"])
        target, _, function = builder.rpartition(":")
        name = f"{Path(target).name}:{function}" if target.endswith(".py") else builder
        here = f"{(path.parent / target).resolve()}:{function}" if target.endswith(".py") else builder
        ref = compare.builder_ref_for(name, model.get("builder_sha256", ""), [here])
        sha = model.get("builder_sha256") or (builders.identity(ref)["builder_sha256"] if ref else "")
        resolved = {**resolved, "model": {**model, "builder": name, "builder_sha256": sha}}
    record = compare.RunRecord(label, str(path), resolved, str(raw.get("data_fingerprint", "")),
                               {str(k): str(v) for k, v in (raw.get("environment") or {}).items()},
                               raw.get("accuracy"), str(raw.get("weights_hash", "")), ref, data, path.stem)
    compare.run_config(record)  # refuse a config that cannot train, before anything is written
    return record


def _short(record: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", record.source[:8] if record.stored else Path(record.source).stem)[:24]


def _gap(a: Any, b: Any) -> float | None:
    return None if a.accuracy is None or b.accuracy is None else float(b.accuracy) - float(a.accuracy)


def _train(name: str, a: Any, b: Any, diffs: list, args: argparse.Namespace, store: _Store,
           context: dict[str, Any]) -> dict[str, Any]:
    """Plan, write and run the explain study; its runs → the attribution."""
    from harness import tracking
    from harness.analysis.attribution import attribute, reproduces
    from harness.commands.common import open_training
    from harness.execution import runner
    from harness.files import write_atomic
    from harness.study import compare
    from harness.study.spec import parse_spec

    uri = store.client.tracking_uri if store.connected else args.tracking_uri  # beside A and B in their store
    text = compare.explain_spec(name, a, b, diffs, args.repeats, uri)
    spec_path = (args.out or Path("reports") / name).resolve() / "explain.yaml"
    spec = parse_spec(text, spec_path)  # validated before it is written
    points, roles = compare.plan_points(a, b, diffs)
    open_args = argparse.Namespace(workers=args.workers, storage=args.storage, tracking_uri=uri)
    study, client, storage, count = open_training(spec, open_args)
    write_atomic(spec_path, text)
    print(f"explain: {len(study.runs)} trainings ({len(points)} configurations x {spec.repeats} seed blocks) "
          f"in study '{name}'", file=sys.stderr)
    table = runner.run_study(study, client, storage, count, progress=not args.no_progress)
    exp_id = tracking.experiment_id(client, name, create=False)
    context["experiment"] = exp_id
    tracking.name_parent(client, exp_id, f"explain:{a.source}..{b.source}",
                         {"harness.explain.a": a.source, "harness.explain.b": b.source,
                          **_divergence_tags(context.get("trace"))})
    store.adopt(client)  # where the explain study logged: its parent run gets the files
    table = table.rename(columns={"candidate": "point"})
    finished = table[table["status"] == "FINISHED"]
    context["runs_trained"] = len(table)
    context["points"] = {p: {"mean": float(g["accuracy"].mean()), "n": int(len(g))}
                         for p, g in finished.groupby("point", sort=False)}
    varied = [d.key for d in diffs if d.varied]
    if not context["block_sources"]:  # A's exact config once: does this machine reproduce A (or B)?
        row = finished.iloc[0] if len(finished) else None
        context["exact_rerun"] = None if row is None else {"weights_hash": row["weights_hash"],
                                                           "accuracy": float(row["accuracy"])}
        return {"level": 0.95}
    context["reproduction"] = reproduces(a.accuracy, finished.loc[finished["point"] == roles["A"], "accuracy"])
    return attribute(finished, roles, varied, alpha=args.alpha, observed_gap=context["observed_gap"])


def _from_store(a: Any, b: Any, diffs: list, store: _Store, context: dict[str, Any]) -> dict[str, Any] | None:
    """--no-train: seed noise from the store's replicates of A's configuration that differ from A only in the
    seeds A and B differ in; no attribution of config differences (that needs training)."""
    import pandas as pd

    from harness import tracking
    from harness.analysis.attribution import attribute
    from harness.study.spec import SEED_SOURCES

    if not a.stored:
        return None
    shared = {s for s in SEED_SOURCES if s not in context["block_sources"]}
    mine = {k: str(v) for k, v in a.resolved.get("seeds", {}).items()}
    replicates = [r for r in tracking.same_config_runs(store.client, a.source)
                  if all(r["seeds"].get(s) == mine.get(s) for s in shared)]
    context["noise_from_store"] = True
    context["runs_trained"] = 0
    table = pd.DataFrame({"point": "A", "replicate": range(len(replicates)),
                          "accuracy": [r["accuracy"] for r in replicates]})
    return attribute(table, {"A": "A"}, [], observed_gap=None) if len(table) else None


def _trace(a: Any, b: Any, steps: int | None, diffs: list) -> dict[str, Any]:
    """Replay A and B in two fresh processes, step by step, until they part (harness.execution.trace)."""
    from harness.execution.trace import trace
    from harness.study import compare

    configs = (compare.run_config(a), compare.run_config(b))  # refuses a builder that is not on this machine
    data = tuple(record.data or {"source": "synthetic"} for record in (a, b))
    print(f"explain: replaying A and B {f'for {steps} steps' if steps else 'through their first epoch'}, each in "
          "a fresh process, to find where they part", file=sys.stderr)
    return trace(configs, data, steps, {d.key: (d.a, d.b) for d in diffs if d.kind in ("config", "seed")})


def _divergence_tags(traced: dict[str, Any] | None) -> dict[str, str]:
    """The divergence as tags of the explain parent run (`harness.divergence.*`), for the MLflow UI's filters."""
    if traced is None:
        return {}
    found = traced["divergence"]
    if found is None:
        return {"harness.divergence": f"identical through {traced['steps']} steps"}
    return {"harness.divergence": f"step {found['step']}: {found['kind']}",
            **{f"harness.divergence.{key}": str(found[key]) for key in ("step", "kind", "where", "op", "max_abs_diff")}}


def _divergence_note(diffs: list, traced: dict[str, Any] | None, weights_differ: bool) -> str | None:
    """Runs with different weights whose replays here are identical differ for a reason the replay does not
    reproduce: say so, with what their recorded environments differ in."""
    if traced is None or traced["divergence"] is not None or not weights_differ:
        return None
    environment = [f"{d.key} ({d.a} vs {d.b})" for d in diffs if d.kind == "environment"]
    return (f"A and B have different weights, yet their replays here are identical through {traced['steps']} steps: "
            "they differ for a reason this machine does not reproduce (another machine, library or device); their "
            f"recorded environments differ in: {', '.join(environment) or 'nothing both recorded'}.")
