"""Stand-ins for planned runs in queue tests: only the run key and a default config matter to the queue."""

from types import SimpleNamespace

from harness.study.spec import RunConfig

GROUP = ["tensorflow", True, True, 0, 0, False]  # a process key: backend, determinism flags, threads, batching


def fake_runs(*keys: str) -> list:
    return [SimpleNamespace(run_key=key, config=RunConfig()) for key in keys]
