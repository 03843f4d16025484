"""`harness doctor`: can this machine run a study as specified, and if a GPU is missing, why.

The contest notebook lost hours to a TensorFlow that silently ran on CPU. The reason a GPU is missing is decided
by `gpu_reason`, a pure function of probed facts, so every branch is tested without the hardware.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.determinism import native_stderr_silenced
from harness.env import backend_build, package_version

GPU_INSTALL = {
    "tensorflow": "pip install -e '.[gpu]' (tensorflow[and-cuda] brings CUDA and cuDNN)",
    "jax": "pip install 'jax[cuda12]'",
    "torch": "install a CUDA build of torch (pip install torch --index-url https://download.pytorch.org/whl/cu126)",
}
LOW_DISK_GB = 2.0  # a 200k-image study caches a few hundred MB per pipeline


@dataclass(frozen=True)
class GpuFacts:
    """What decides whether a backend can use a GPU here; every field is probed by `probe_gpu`."""

    backend: str
    backend_version: str
    gpus_visible: int  # GPUs the backend itself lists
    driver: str | None  # NVIDIA kernel driver version; None when there is no driver
    driver_cuda: str | None  # newest CUDA the driver supports (nvidia-smi); None when unknown
    build_cuda: str | None  # CUDA the backend was built for; None for a CPU-only build
    build_cudnn: str | None
    cuda_libs: bool  # the CUDA runtime and cuDNN the build needs can be loaded
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES as set, None when unset


def gpu_reason(f: GpuFacts) -> str | None:
    """The one most likely reason the backend lists no GPU, with the fix; None when it lists one."""
    name = f"{f.backend} {f.backend_version}"
    if f.gpus_visible:
        return None
    if f.visible_devices is not None and f.visible_devices.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES='{f.visible_devices}' hides every GPU from this process: unset it"
    if f.driver is None:
        build = "a CPU-only build" if f.build_cuda is None else f"built for CUDA {f.build_cuda}"
        return (f"no NVIDIA driver (no /proc/driver/nvidia/version, no nvidia-smi) and {name} is {build}: "
                "this machine has no usable GPU; trainings run on CPU")
    if f.build_cuda is None:
        return f"{name} is a CPU-only build although NVIDIA driver {f.driver} is present: {GPU_INSTALL[f.backend]}"
    if f.driver_cuda and _version(f.driver_cuda) < _version(f.build_cuda):
        return (f"NVIDIA driver {f.driver} supports CUDA up to {f.driver_cuda} but {name} was built for CUDA "
                f"{f.build_cuda}: upgrade the driver, or install a {f.backend} built for CUDA <= {f.driver_cuda}")
    if not f.cuda_libs:
        return (f"{name} was built for CUDA {f.build_cuda} / cuDNN {f.build_cudnn} but those libraries cannot be "
                f"loaded: {GPU_INSTALL[f.backend]}, or put them on LD_LIBRARY_PATH")
    return (f"driver {f.driver} and CUDA {f.build_cuda} libraries are present, yet {name} lists no GPU: "
            "rerun with TF_CPP_MIN_LOG_LEVEL=0 to see the backend's own message")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def probe_gpu(backend: str) -> GpuFacts:
    """Ask the backend, the kernel driver and the dynamic loader; imports the backend (not Keras)."""
    with native_stderr_silenced():
        build = backend_build(backend)
    cuda = None if build["cuda_build"] == "none" else build["cuda_build"]
    cudnn = None if build["cudnn_build"] == "none" else build["cudnn_build"]
    return GpuFacts(
        backend=backend,
        backend_version=build["backend_version"],
        gpus_visible=sum(part.split(":")[0].lower() in ("gpu", "cuda") for part in build["devices"].split(",")),
        driver=driver_version(),
        driver_cuda=_smi_cuda(),
        build_cuda=_cuda_number(cuda),
        build_cudnn=cudnn,
        cuda_libs=cuda is not None and _cuda_libs_load(backend, _cuda_number(cuda), cudnn),
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def _cuda_number(build: str | None) -> str | None:
    """'12.5.1', 'jax-cuda12-plugin 0.7.1' -> '12.5', '12'."""
    if build is None:
        return None
    match = re.search(r"cuda(\d+)-plugin", build) or re.search(r"(\d+(?:\.\d+)?)", build)
    return match.group(1) if match else None


def driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return _smi(["--query-gpu=driver_version", "--format=csv,noheader"]) or None
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", text)
    return match.group(1) if match else "unknown version"


def _smi(args: list[str]) -> str:
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _smi_cuda() -> str | None:
    match = re.search(r"CUDA Version:\s*([\d.]+)", _smi([]))
    return match.group(1) if match else None


def nvidia_gpus() -> list[dict[str, str]]:
    """Physical GPUs as the driver sees them, whatever the backend: name, memory, compute capability."""
    fields = ["name", "memory.total", "compute_cap"]
    rows = _smi([f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]).splitlines()
    return [dict(zip(fields, (part.strip() for part in row.split(",")), strict=False)) for row in rows if row]


def _cuda_libs_load(backend: str, cuda: str | None, cudnn: str | None) -> bool:
    """torch bundles its libraries; TF and jax's plugin load them from pip's nvidia-* wheels or the system."""
    if backend == "torch":
        return True
    major = (cuda or "").split(".")[0]
    wheels = [f"nvidia-cuda-runtime-cu{major}", f"nvidia-cudnn-cu{major}"]
    if all(package_version(w) != "not installed" for w in wheels):
        return True
    libs = [f"libcudart.so.{major}", f"libcudnn.so.{(cudnn or '9').split('.')[0]}"]
    try:
        for lib in libs:
            ctypes.CDLL(lib)
    except OSError:
        return False
    return True


def gpu_factors(gpus: list[dict[str, str]], gpu_visible: bool) -> dict[str, str]:
    """Whether the GPU-only determinism and precision switches can change anything on this machine."""
    capability = max((float(g.get("compute_cap") or 0) for g in gpus), default=0.0) if gpu_visible else 0.0
    if not gpu_visible:
        no_gpu = "no effect here: no GPU visible (recorded anyway, so runs stay comparable)"
        return {"op_determinism": "takes effect (CPU kernels; cuDNN algorithm choice needs a GPU)",
                "env_flags (TF_CUDNN_DETERMINISTIC, CUBLAS_WORKSPACE_CONFIG)": no_gpu, "tf32": no_gpu,
                "precision mixed_float16": "runs, but on CPU it is slower than float32, not faster"}
    return {"op_determinism": "takes effect (deterministic cuDNN/cuBLAS kernels; expect a slowdown)",
            "env_flags (TF_CUDNN_DETERMINISTIC, CUBLAS_WORKSPACE_CONFIG)": "takes effect",
            "tf32": "takes effect" if capability >= 8.0 else f"no effect: compute capability {capability} < 8.0",
            "precision mixed_float16": "takes effect" if capability >= 7.0 else "no tensor cores: slower"}


def as_dict(facts: GpuFacts) -> dict[str, Any]:
    return asdict(facts) | {"reason_no_gpu": gpu_reason(facts)}


def study_backends(spec: Any) -> list[str]:
    """Backends a study trains with: the base config's, or the levels of a `backend` factor."""
    return list(dict.fromkeys(spec.factors.get("backend", [spec.base.backend])))


def device_problems(spec: Any) -> list[str]:
    """Unmet device and backend requirements of a study; imports the backends, so run it in a child process."""
    problems = []
    for backend in study_backends(spec):
        if package_version(backend) == "not installed":
            problems.append(f"study '{spec.name}' trains with backend '{backend}', which is not installed here")
            continue
        facts = probe_gpu(backend)
        if spec.device == "gpu" and (reason := gpu_reason(facts)):
            problems.append(f"study '{spec.name}' needs a GPU (device: gpu) but {backend} has none: {reason}")
        if backend == "torch" and facts.gpus_visible and _torch_needs_env_flags(spec):
            problems.append(f"study '{spec.name}': torch with op_determinism on a GPU needs "
                            "determinism.env_flags: true (CUBLAS_WORKSPACE_CONFIG), or torch raises mid-training")
    return problems


def _torch_needs_env_flags(spec: Any) -> bool:
    det = spec.base.determinism
    on = spec.factors.get("determinism.op_determinism", [det.op_determinism])
    flags = spec.factors.get("determinism.env_flags", [det.env_flags])
    return any(on) and not all(flags)


def store_check(kind: str, url: str | None) -> dict[str, Any]:
    """Can the MLflow store / Optuna storage be reached? A SQLite file that does not exist yet is fine."""
    from harness import engine, tracking
    from harness.errors import HarnessError

    url = url or (tracking.default_uri() if kind == "tracking" else engine.default_storage())
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        folder = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
        ok = os.access(folder, os.W_OK)
        state = "exists" if path.exists() else "will be created"
        return {"url": url, "ok": ok, "detail": f"{state}" if ok else f"{folder} is not writable"}
    try:
        tracking.connect(url) if kind == "tracking" else engine.open_storage(url)
    except HarnessError as err:
        return {"url": url, "ok": False, "detail": str(err)}
    return {"url": url, "ok": True, "detail": "reachable"}


def diagnose(backends: list[str], tracking_uri: str | None, storage_url: str | None,
             spec: Any = None) -> dict[str, Any]:
    """Everything `doctor` prints. `problems` are unmet study requirements (exit 2); `warnings` are not."""
    from harness import determinism, env

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
    report["study"] = None if spec is None else spec.name
    report["problems"], report["warnings"] = problems, warnings
    return report


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
