"""Determinism switches: applied once per training process, then read back and recorded.

TensorFlow fixes thread pools and the cuDNN environment flags when its runtime starts, so these settings
belong to a process, not to a run; the runner starts one process per distinct setting. What a run records is
what the process reports back, not what the spec asked for.
"""

from __future__ import annotations

import os
from typing import Any

from harness.spec import DeterminismConfig

ENV_FLAGS = ("TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC")


def configure_process(det: DeterminismConfig) -> None:
    """Must run before TensorFlow executes anything in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ log noise would break the progress bar
    for flag in ENV_FLAGS:
        if det.env_flags:
            os.environ[flag] = "1"
        else:
            os.environ.pop(flag, None)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(det.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(det.inter_op_threads)
    if det.op_determinism:
        tf.config.experimental.enable_op_determinism()


def seed_run() -> None:
    """Reset Keras' state so a run never depends on what ran before it in this process."""
    import keras

    keras.backend.clear_session(free_memory=True)
    # A constant: every random layer and the tf.data shuffle carry their own source's seed, and TF mixes the
    # global seed into op seeds, so seeding it from one source would leak that source into the others.
    keras.utils.set_random_seed(0)


def read_back(xla: bool) -> dict[str, Any]:
    """The determinism state this process actually has."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    is_enabled = getattr(tf_config, "is_op_determinism_enabled", None)
    return {
        "op_determinism": bool(is_enabled()) if is_enabled else None,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "xla": xla,
        **{flag: os.environ.get(flag, "") for flag in ENV_FLAGS},
    }
