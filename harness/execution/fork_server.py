"""The fork server training processes start from, so each command imports the backend once (`preload`)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal

PROCESS_START = "forkserver"


PRELOAD_BACKEND = "HARNESS_PRELOAD_BACKEND"  # the backend `preload` imports in the server; empty: none


def start_process_server(backends: list[str]) -> None:
    """Start the process that forks training processes, importing the study's backends in it once, now.

    Importing TensorFlow takes 9-13 s of CPU, and MLflow, Optuna and scikit-learn 4.5 s more (`preload`). Through
    a fork server that is paid once per command, while the parent prepares (data, splits, MLflow store, run
    storage), instead of once per training process (each worker, each replacement, each process group). Nothing
    but imports runs in the server: no backend context, thread setting or determinism switch exists until a
    training process sets its own, so a forked process trains exactly as a spawned one
    (tests/training/test_determinism.py compares their weights). Call it once every environment variable the
    workers need is set (`prepared.apply_device`): forked processes inherit the server's environment, not the
    parent's later one.

    Only a study on one backend gets the backend preloaded: importing TensorFlow imports Keras, which then keeps
    the TensorFlow backend, so a jax or torch process forked from that server could not choose its own."""
    import atexit
    from multiprocessing import forkserver

    context = mp.get_context(PROCESS_START)
    if len(set(backends)) == 1:  # the Keras the server imports must take the study's backend
        os.environ["KERAS_BACKEND"] = os.environ[PRELOAD_BACKEND] = backends[0]
    else:
        os.environ[PRELOAD_BACKEND] = ""
    context.set_forkserver_preload(["harness.execution.preload"])
    # a Ctrl-C reaches the whole process group: the server must not die mid-import with a traceback (it ignores
    # SIGINT only once its import is done); workers install their own handlers when they start
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
    atexit.register(_stop_process_server)


def _stop_process_server() -> None:
    """At exit, end a server that is still importing (nothing left to train, or an early error) instead of
    leaving it to finish a 10-s import that holds the command's output pipes open. The standard library exposes
    no handle for this; the server's pid is a private attribute, so absence is tolerated."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
