"""Chaos: a study with 2 workers; SIGKILL a random worker or the parent at random times, resume, and compare the
end state with an undisturbed run of the same study by one worker (so the weights also show that how many
workers trained a run, and in which order, changes nothing).

    python benchmarks/chaos.py --kills 20            # about 20-40 minutes on 2 shared cores
    python benchmarks/chaos.py --kills 3 --repeats 4 # the short version tests/execution/test_chaos.py runs
    python benchmarks/chaos.py --kills 20 --store postgresql   # queue and runs on a PostgreSQL started here

A kill lands once the parent has at least one worker, after a random 0-`--window` s: during a worker's start,
an epoch, logging or a claim. Every third kill takes the parent (its workers get SIGTERM from the kernel, end
their epoch, give their trial back), the others a random worker (the parent replaces it); either way
`harness run` is started again until it finishes. Prints RESULT lines: kills, resumes, lost, duplicated,
hash_mismatches, orphans (all but the first two must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import services  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = """
name: chaos
data: {{source: synthetic, n: 200, seed: 0}}
repeats: {repeats}
base:
  model: {{filters: 4, depth: 1, dense_units: 8}}
  determinism: {{intra_op_threads: 1, inter_op_threads: 1}}
  stages: {{train: {{pipeline: [stretch], epochs: {epochs}}}}}
"""


@dataclass
class Stores:
    """Where one side (undisturbed or chaotic) keeps its queue and its runs."""

    storage: str
    tracking: str

    @classmethod
    def sqlite(cls, folder: Path) -> Stores:
        return cls(f"sqlite:///{folder / 'mlruns/optuna.db'}", f"sqlite:///{folder / 'mlruns/mlflow.db'}")

    @classmethod
    def postgresql(cls, server: str, side: str) -> Stores:
        """Both on the PostgreSQL server (MLflow on a database URI; artifacts in the side's folder)."""
        return cls(f"{server}/optuna_{side}", f"{server}/mlflow_{side}")


def start(folder: Path, workers: int, stores: Stores) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "chaos.yaml", "--no-progress", "--workers",
                             str(workers), "--storage", stores.storage, "--tracking-uri", stores.tracking],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def processes_in(folder: Path) -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live process working in `folder`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != folder:
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] != "Z":
                found[int(entry.name)] = (int(stat[1]), (entry / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue
    return found


def workers_of(parent: int, folder: Path) -> list[int]:
    """Training processes of the command `parent`: children of its fork server."""
    live = processes_in(folder)
    servers = {pid for pid, (ppid, command) in live.items() if ppid == parent and "forkserver" in command}
    return [pid for pid, (ppid, _) in live.items() if ppid in servers]


def settle(folder: Path, seconds: float = 90) -> int:
    """Wait for every process of the study to end; the number still alive after `seconds` (orphans). A worker
    whose parent died may take up to STOP_TIMEOUT_S (60 s, then SIGALRM) to reach a stop check while it is
    still importing or loading; 60 s here counted such slow exits as orphans on a machine at load 30-50."""
    deadline = time.monotonic() + seconds
    while (left := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, (ppid, command) in left.items():
        print(f"orphan {pid} (parent {ppid}): {command.replace(chr(0), ' ')[:200]}", flush=True)
    return len(left)


def chaos(folder: Path, stores: Stores, kills: int, workers: int, window: float,
          rng: random.Random) -> dict[str, int]:
    done = {"kills": 0, "resumes": 0, "orphans": 0, "worker_kills": 0, "parent_kills": 0}
    while True:
        process = start(folder, workers, stores)
        while process.poll() is None and done["kills"] < kills:
            live = workers_of(process.pid, folder)
            if not live:
                time.sleep(0.2)
                continue
            time.sleep(rng.uniform(0, window))
            live = workers_of(process.pid, folder)
            if process.poll() is not None or not live:
                continue
            # every third kill takes the parent (and so its workers), the others a random worker
            victim = process.pid if done["kills"] % 3 == 2 else rng.choice(live)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            done["kills"] += 1
            done["parent_kills" if victim == process.pid else "worker_kills"] += 1
            print(f"kill {done['kills']}: {'parent' if victim == process.pid else 'worker'} {victim}", flush=True)
        code = process.wait()
        done["orphans"] += settle(folder)
        if code == 0:
            return done
        done["resumes"] += 1


def outcome(stores: Stores) -> tuple[dict[str, list[str]], Counter]:
    """Weights hashes of FINISHED runs by run key, and COMPLETE trials by run key."""
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    client = MlflowClient(tracking_uri=stores.tracking)
    experiment = client.get_experiment_by_name("chaos").experiment_id
    hashes: dict[str, list[str]] = {}
    for run in client.search_runs([experiment], "tags.`harness.role` = 'training'", max_results=10_000):
        if run.info.status == "FINISHED":
            hashes.setdefault(run.data.tags["harness.run_key"], []).append(run.data.tags["harness.weights_hash"])
    queue = optuna.load_study(study_name="chaos", storage=stores.storage)
    complete = Counter(t.user_attrs["run_key"] for t in queue.trials if t.state == TrialState.COMPLETE)
    return hashes, complete


def compare(calm: Stores, chaotic: Stores, planned: int) -> dict[str, int]:
    reference, _ = outcome(calm)
    hashes, complete = outcome(chaotic)
    assert len(reference) == planned, f"the undisturbed run finished {len(reference)} of {planned}"
    return {
        "lost": sum(key not in hashes for key in reference),
        "duplicated": sum(len(found) > 1 for found in hashes.values()) + sum(n > 1 for n in complete.values()),
        "hash_mismatches": sum(hashes.get(key, [None])[0] != value[0] for key, value in reference.items()),
    }


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=12, help="runs in the study (default 12)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=float, default=8.0, help="a kill comes 0-WINDOW s after a worker exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help="queue and runs on SQLite files, or on a PostgreSQL server started here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="harness-chaos-") as tmp, contextlib.ExitStack() as stack:
        sides = {"calm": Path(tmp, "calm"), "chaos": Path(tmp, "chaos")}
        if args.store == "postgresql":
            server = stack.enter_context(services.postgres(("optuna_calm", "optuna_chaos", "mlflow_calm",
                                                            "mlflow_chaos")))
            stores = {side: Stores.postgresql(server, side) for side in sides}
        else:
            stores = {side: Stores.sqlite(folder) for side, folder in sides.items()}
        for folder in sides.values():
            folder.mkdir()
            (folder / "chaos.yaml").write_text(SPEC.format(repeats=args.repeats, epochs=args.epochs))
        started = time.monotonic()
        undisturbed = start(sides["calm"], 1, stores["calm"]).wait()
        assert undisturbed == 0, f"the undisturbed run exited {undisturbed}"
        calm_s = time.monotonic() - started
        result = chaos(sides["chaos"], stores["chaos"], args.kills, args.workers, args.window,
                       random.Random(args.seed))
        result |= compare(stores["calm"], stores["chaos"], args.repeats)
        result |= {"undisturbed_s": round(calm_s), "chaos_s": round(time.monotonic() - started - calm_s)}
    for key, value in result.items():
        print(f"RESULT chaos_{key} = {value}")
    return result


if __name__ == "__main__":
    main()
