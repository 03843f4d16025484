"""`harness doctor`: can this machine run a study as specified: versions, devices, determinism, stores, disk.

Problems (unmet study requirements, unreachable stores) exit 2 with the first one on stderr; warnings do not.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from harness.devices import as_dict, device_problems, gpu_factors, nvidia_gpus, probe_gpu
from harness.env import native_stderr_silenced, package_version

LOW_DISK_GB = 2.0  # a 200k-image study caches a few hundred MB per pipeline


def doctor(args: argparse.Namespace) -> int:
    import json
    import sys

    from harness.study.spec import load_spec

    spec = load_spec(args.study) if args.study else None
    from harness.devices import study_backends

    backends = args.backend or (study_backends(spec) if spec else ["tensorflow"])
    report = diagnose(backends, args.tracking_uri or (spec.tracking.uri if spec else None), args.storage, spec)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    if report["problems"]:
        print(f"error: {report['problems'][0]}", file=sys.stderr)
        return 2
    return 0


def store_check(kind: str, url: str | None) -> dict[str, Any]:
    """Can the MLflow store / Optuna storage be reached? A SQLite file that does not exist yet is fine; for the
    run storage, only in a folder that exists (or ./mlruns), as `run` requires."""
    from harness import tracking
    from harness.errors import HarnessError
    from harness.execution import run_queue, storage

    url = url or (tracking.default_uri() if kind == "tracking" else run_queue.default_storage())
    if kind == "storage":
        try:
            storage.folder_must_exist(url)  # the rule `run` applies: a named SQLite file's folder is not made
        except HarnessError as err:
            return {"url": url, "ok": False, "detail": str(err)}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        folder = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
        ok = os.access(folder, os.W_OK)
        state = "exists" if path.exists() else "will be created"
        return {"url": url, "ok": ok, "detail": f"{state}" if ok else f"{folder} is not writable"}
    try:
        tracking.connect(url) if kind == "tracking" else run_queue.open_storage(url)
    except HarnessError as err:
        return {"url": url, "ok": False, "detail": str(err)}
    return {"url": url, "ok": True, "detail": "reachable"}


def diagnose(backends: list[str], tracking_uri: str | None, storage_url: str | None,
             spec: Any = None) -> dict[str, Any]:
    """Everything `doctor` prints. `problems` are unmet study requirements (exit 2); `warnings` are not."""
    from harness import env
    from harness.training import determinism

    os.environ.setdefault("KERAS_BACKEND", backends[0])
    gpus = nvidia_gpus()
    with native_stderr_silenced():
        snapshot = env.snapshot()
    report: dict[str, Any] = {"environment": snapshot, "nvidia_gpus": gpus, "backends": {},
                              "memory_gb": _ram_gb(), "cpus_usable": len(os.sched_getaffinity(0))}
    for backend in backends:
        if package_version(backend) == "not installed":
            report["backends"][backend] = {"installed": False}
            continue
        report["backends"][backend] = {"installed": True, **as_dict(probe_gpu(backend))}
    state = determinism.read_back(xla=False)
    state.pop("xla")
    report["determinism"] = state | {"XLA": _xla_state(state["backend"])}
    visible = any(b.get("gpus_visible") for b in report["backends"].values())
    report["gpu_factors"] = gpu_factors(gpus, visible)
    report["tracking"] = store_check("tracking", tracking_uri)
    report["storage"] = store_check("storage", storage_url)
    report["disk_free_gb"] = round(shutil.disk_usage(Path.cwd()).free / 2**30, 1)
    problems = [f"{kind} '{report[kind]['url']}': {report[kind]['detail']}"
                for kind in ("tracking", "storage") if not report[kind]["ok"]]
    low_disk = report["disk_free_gb"] < LOW_DISK_GB
    warnings = [f"only {report['disk_free_gb']} GiB free under {Path.cwd()}"] if low_disk else []
    if spec is not None:
        problems = device_problems(spec) + problems
        warnings += _thread_warnings(spec, report["cpus_usable"])
        builder_problems, builder_warnings = user_model_findings(spec)
        problems, warnings = problems + builder_problems, warnings + builder_warnings
    report["study"] = None if spec is None else spec.name
    report["problems"], report["warnings"] = problems, warnings
    return report


def user_model_findings(spec: Any) -> tuple[list[str], list[str]]:
    """A study's user models, built twice with the same seeds: (problems, warnings). Builders that ignore `seeds`
    are warned about here, before a long study whose replicates would then differ for reasons no seed explains."""
    from harness.errors import HarnessError
    from harness.study.builders import check_sources
    from harness.study.design import plan_runs
    from harness.training.sources import load_study_data
    from harness.training.user_model import check_builders

    try:
        check_sources(spec)  # a file that cannot import answers before Keras loads
        data = load_study_data(spec.data)
        runs = plan_runs(spec, data.fingerprint, data.images.shape[1])
        models = list({run.config.model.model_dump_json(): run.config.model for run in runs
                       if run.config.model.builder}.values())
        if not models:
            return [], []
        with native_stderr_silenced():
            found = check_builders(models, data.input_shape, data.n_classes, sorted(data.side), runs[0].seeds)
    except HarnessError as err:
        return [str(err)], []
    return [], [warning.removeprefix("warning: ") for warning in found]


def _ram_gb() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def _xla_state(backend: str) -> str:
    if backend == "tensorflow":
        import tensorflow as tf

        auto = tf.config.optimizer.get_jit() or "off"
        return f"available; auto-clustering {auto}; a run compiles with XLA when its determinism.xla is true"
    if backend == "jax":
        return "always (jax compiles every step with XLA)"
    return "not used by torch"


def _thread_warnings(spec: Any, cpus: int) -> list[str]:
    det = spec.base.determinism
    asked = [*spec.factors.get("determinism.intra_op_threads", [det.intra_op_threads]),
             *spec.factors.get("determinism.inter_op_threads", [det.inter_op_threads])]
    return [f"study '{spec.name}' asks for {n} threads but {cpus} CPUs are usable: oversubscribed, slower"
            for n in dict.fromkeys(asked) if n and n > cpus]


def render(report: dict[str, Any]) -> str:
    """Plain text for a terminal: facts first, then what blocks the study."""
    env = report["environment"]
    lines = [f"python {env['python']} on {env['platform']}; keras {env['keras']} ({env['keras_backend']}); "
             f"harness commit {env['git_commit']}",
             f"cpu: {report['cpus_usable']} usable cores, {report['memory_gb']} GiB RAM; "
             f"disk: {report['disk_free_gb']} GiB free here"]
    gpus = report["nvidia_gpus"]
    lines.append("nvidia: " + ("; ".join(f"{g.get('name')} {g.get('memory.total')} cc {g.get('compute_cap')}"
                                         for g in gpus) if gpus else "no GPU found by nvidia-smi"))
    for name, b in report["backends"].items():
        if not b["installed"]:
            lines.append(f"{name}: not installed")
            continue
        lines.append(f"{name} {b['backend_version']}: built for CUDA {b['build_cuda'] or 'none (CPU-only)'}, "
                     f"cuDNN {b['build_cudnn'] or 'none'}; GPUs visible: {b['gpus_visible']}")
        if b["reason_no_gpu"]:
            lines.append(f"  why no GPU: {b['reason_no_gpu']}")
    det = report["determinism"]
    lines.append("determinism now: " + ", ".join(f"{k}={v}" for k, v in det.items() if k != "XLA"))
    lines.append(f"XLA: {det['XLA']}")
    lines += [f"  {factor}: {effect}" for factor, effect in report["gpu_factors"].items()]
    for kind in ("tracking", "storage"):
        s = report[kind]
        lines.append(f"{'MLflow store' if kind == 'tracking' else 'Optuna storage'} {s['url']}: {s['detail']}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    if report["study"]:
        lines += [f"problem: {p}" for p in report["problems"]] or [f"study '{report['study']}': requirements met"]
    else:
        lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)
