"""Devices: which GPUs a backend sees, and when it sees none, the one most likely reason and its fix.

The contest notebook lost hours to a TensorFlow that silently ran on CPU. The reason a GPU is missing is decided
by `gpu_reason`, a pure function of probed facts, so every branch is tested without the hardware. `run` uses
`device_problems` to refuse a `device: gpu` study on a machine without one; `doctor` prints all of it.
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

from harness.env import backend_build, native_stderr_silenced, package_version

GPU_INSTALL = {
    "tensorflow": "pip install -e '.[gpu]' (tensorflow[and-cuda] brings CUDA and cuDNN)",
    "jax": "pip install 'jax[cuda12]'",
    "torch": "install a CUDA build of torch (pip install torch --index-url https://download.pytorch.org/whl/cu126)",
}


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
