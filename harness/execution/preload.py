"""What the fork server imports before it forks training processes: the study's backend and every library a
training process needs, once per command instead of once per process.

`execution.fork_server.start_process_server` names this module as the server's preload. Each training process then
starts with TensorFlow (~9 s of CPU), MLflow's SQL store, Optuna and scikit-learn (~4.5 s more) already imported.
The backend is imported only when the study has one (PRELOAD_BACKEND): importing it imports Keras, which then
keeps that backend, so a study that mixes backends gets the libraries but not the backend. TensorFlow logs from
C++ at import whatever TF_CPP_MIN_LOG_LEVEL says, and the server shares the command's terminal, so the import runs
with native stderr silenced, as `determinism.configure_process` does. Imports only: no thread, context or device
exists in the server, so a forked process trains as a spawned one does (tests/training/test_determinism.py).
"""

import importlib
import os

from harness.env import native_stderr_silenced
from harness.execution.fork_server import PRELOAD_BACKEND

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as tracking.connect: no telemetry thread to fork
if os.environ.get(PRELOAD_BACKEND):
    with native_stderr_silenced():
        importlib.import_module(os.environ[PRELOAD_BACKEND])
        importlib.import_module("keras")

for module in ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "optuna", "sklearn.model_selection",
               "harness.execution.runner", "harness.training.train", "harness.training.user_model"):
    importlib.import_module(module)
