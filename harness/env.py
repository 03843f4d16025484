"""Environment snapshot logged with every run and shown by `harness doctor`: versions, build, devices, commit."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any


def package_version(name: str) -> str:
    """A distribution's version without importing it ('not installed' when absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@cache
def snapshot() -> dict[str, Any]:
    """What produced a result, beyond its config. Cached: it does not change within a process."""
    import keras

    backend = keras.backend.backend()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "tensorflow": package_version("tensorflow"),
        "numpy": package_version("numpy"),
        "opencv": package_version("opencv-python-headless"),
        "keras": keras.__version__,
        "keras_backend": backend,
        **backend_build(backend),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),  # device: cpu sets -1
        "git_commit": git_commit(),
        # variables that change kernels or thread pools without being a run's config (`explain` compares them)
        "kernel_env": " ".join(f"{name}={os.environ[name]}" for name in KERNEL_ENV if name in os.environ) or "none",
    }


BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def kernel_environment(backend: str) -> dict[str, str]:
    """What changes a run's kernels, read without importing any backend: part of its run key, so a changed library,
    CPU or device setting never reuses a run trained before the change (`harness run` trains it again)."""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": str(os.cpu_count()), "keras": package_version("keras"), "numpy": package_version("numpy"),
            "opencv": package_version("opencv-python-headless"),
            **{name: package_version(name) for name in BACKEND_PACKAGES[backend]},
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}


KERNEL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
              "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS")


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo on Linux): the same code can round differently on another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def backend_build(backend: str) -> dict[str, str]:
    """The backend's version, the CUDA/cuDNN it was built for, and the devices it sees."""
    if backend == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        devices = tf.config.list_physical_devices()
        return {
            "backend_version": tf.__version__,
            "cuda_build": str(build.get("cuda_version", "none")) if build.get("is_cuda_build") else "none",
            "cudnn_build": str(build.get("cudnn_version", "none")) if build.get("is_cuda_build") else "none",
            "devices": ",".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in devices),
        }
    if backend == "jax":
        import jax

        return {
            "backend_version": jax.__version__,
            "cuda_build": _jax_cuda_plugin(),
            "cudnn_build": "bundled with the jax CUDA plugin",
            "devices": ",".join(f"{d.platform}:{d.id}:{getattr(d, 'device_kind', '')}" for d in jax.devices()),
        }
    import torch

    gpus = [f"cuda:{i}:{torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return {
        "backend_version": torch.__version__,
        "cuda_build": str(torch.version.cuda or "none"),
        "cudnn_build": str(torch.backends.cudnn.version() or "none"),
        "devices": ",".join(["cpu", *gpus]),
    }


def _jax_cuda_plugin() -> str:
    for name in ("jax-cuda13-plugin", "jax-cuda12-plugin"):
        if (version := package_version(name)) != "not installed":
            return f"{name} {version}"
    return "none"


def git_commit() -> str:
    """The harness checkout's commit, with '+dirty' when it has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """TensorFlow 2.21 logs from C++ at import whatever TF_CPP_MIN_LOG_LEVEL says; doctor's errors must be one line."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
