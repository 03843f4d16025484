"""What the fork server imports before it forks training processes: the study's backend, quietly.

`execution.workers.start_process_server` names this module as the server's preload and sets KERAS_BACKEND to the
study's one backend. TensorFlow logs from C++ at import whatever TF_CPP_MIN_LOG_LEVEL says, and the server shares
the command's terminal, so the import runs with native stderr silenced, as `determinism.configure_process` does.
"""

import importlib
import os

from harness.env import native_stderr_silenced

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with native_stderr_silenced():
    importlib.import_module(os.environ["KERAS_BACKEND"])
