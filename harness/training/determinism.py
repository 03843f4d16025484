"""Backend and determinism switches: applied once per training process, then read back and recorded.

Keras picks its backend at import, and every backend fixes thread pools, determinism and TF32 when its runtime
starts, so these settings belong to a process, not to a run: the runner starts one process per distinct setting.
What a run records is what the process reports back, not what the spec asked for.

What each backend guarantees with `op_determinism: true`:
- tensorflow: `enable_op_determinism` makes every op deterministic or raises (CPU and GPU), given seeds.
- jax: `--xla_gpu_deterministic_ops` makes XLA's GPU kernels deterministic; XLA on CPU is deterministic.
- torch: `use_deterministic_algorithms(True)` + `cudnn.deterministic`, with CUBLAS_WORKSPACE_CONFIG set
  (env_flags); ops without a deterministic kernel raise.
"""

from __future__ import annotations

import os
from typing import Any

from harness.env import native_stderr_silenced
from harness.study.spec import DeterminismConfig

TF_ENV_FLAGS = ("TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC")
BACKENDS = ("tensorflow", "jax", "torch")


def configure_process(det: DeterminismConfig, backend: str = "tensorflow") -> None:
    """Must run before Keras or the backend is imported in this process."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ log noise would break the progress bar
    with native_stderr_silenced():
        {"tensorflow": _configure_tensorflow, "jax": _configure_jax, "torch": _configure_torch}[backend](det)
        import keras  # noqa: F401  (imports jax too when installed: its logs land here as well)


def configure_group(group: Any) -> None:
    """`configure_process` from a process key (`study.design.process_key`: backend and the per-process switches)."""
    backend, op_determinism, env_flags, intra, inter, tf32 = group
    det = DeterminismConfig(op_determinism=op_determinism, env_flags=env_flags, intra_op_threads=intra,
                            inter_op_threads=inter, tf32=tf32)
    configure_process(det, backend)


def _configure_tensorflow(det: DeterminismConfig) -> None:
    for flag in TF_ENV_FLAGS:
        if det.env_flags:
            os.environ[flag] = "1"
        else:
            os.environ.pop(flag, None)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing warnings for per-run predict functions are expected here
    tf.config.threading.set_intra_op_parallelism_threads(det.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(det.inter_op_threads)
    tf.config.experimental.enable_tensor_float_32_execution(det.tf32)
    if det.op_determinism:
        tf.config.experimental.enable_op_determinism()


def _configure_jax(det: DeterminismConfig) -> None:
    flags = os.environ.get("XLA_FLAGS", "").split()
    if det.op_determinism:
        flags.append("--xla_gpu_deterministic_ops=true")
    if det.intra_op_threads:
        flags += ["--xla_cpu_multi_thread_eigen=false", f"intra_op_parallelism_threads={det.intra_op_threads}"]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    import jax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if det.tf32 else "float32")


def _configure_torch(det: DeterminismConfig) -> None:
    if det.env_flags:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    import torch

    if det.intra_op_threads:
        torch.set_num_threads(det.intra_op_threads)
    if det.inter_op_threads:
        torch.set_num_interop_threads(det.inter_op_threads)
    torch.use_deterministic_algorithms(det.op_determinism)
    torch.backends.cudnn.deterministic = det.op_determinism
    torch.backends.cudnn.benchmark = not det.op_determinism
    torch.backends.cuda.matmul.allow_tf32 = det.tf32
    torch.backends.cudnn.allow_tf32 = det.tf32


def seed_run() -> None:
    """Reset Keras' state so a run never depends on what ran before it in this process."""
    import keras

    keras.backend.clear_session(free_memory=True)
    # A constant: every random layer and the batch order carry their own source's seed, and TF mixes the global
    # seed into op seeds, so seeding it from one source would leak that source into the others.
    keras.utils.set_random_seed(0)


def read_back(xla: bool) -> dict[str, Any]:
    """The backend and determinism state this process actually has."""
    import keras

    backend = keras.backend.backend()
    state: dict[str, Any] = {"backend": backend, "xla": xla}
    if backend == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        is_enabled = getattr(tf_config, "is_op_determinism_enabled", None)
        state |= {
            "op_determinism": bool(is_enabled()) if is_enabled else None,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            **{flag: os.environ.get(flag, "") for flag in TF_ENV_FLAGS},
        }
    elif backend == "jax":
        import jax

        state |= {
            "op_determinism": "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", ""),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "tf32": jax.config.jax_default_matmul_precision == "tensorfloat32",
        }
    else:
        import torch

        state |= {
            "op_determinism": torch.are_deterministic_algorithms_enabled(),
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "tf32": torch.backends.cuda.matmul.allow_tf32,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
        }
    return state
