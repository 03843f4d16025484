"""Environment snapshot logged with every run: versions, devices, build, host, code commit."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any


@cache
def snapshot() -> dict[str, Any]:
    """What produced a result, beyond its config. Cached: it does not change within a process."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "cuda_build": str(build.get("cuda_version", "none")),
        "cudnn_build": str(build.get("cudnn_version", "none")),
        "devices": ",".join(
            d.device_type + ":" + d.name.split(":")[-1] for d in tf.config.list_physical_devices()
        ),
        "git_commit": git_commit(),
    }


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
