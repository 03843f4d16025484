"""Run every benchmark in turn (about 30 minutes on 2 cores) and print every ratio at the end.

Each `bench_*.py` runs in its own process and prints `RESULT name = value [target ...]` lines; this script
echoes their output and then prints the machine, the versions and all results together.

    python benchmarks/run_all.py [--only overhead,throughput,...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import version

from common import REPO, subprocess_env

BENCHMARKS = ["overhead", "throughput", "study", "preprocess", "scaling", "hardware", "determinism", "seed_batch"]
NOISE = re.compile(r"^(I0000|E0000|W0000|WARNING: All log messages|To enable the following|.*UserWarning|  self\.)")


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    packages = ["tensorflow", "keras", "mlflow", "optuna", "numpy", "opencv-python-headless"]
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    cpu = model.group(1) if model else platform.processor()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores; Python {platform.python_version()}; {versions}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else BENCHMARKS
    results: list[str] = []
    started = time.perf_counter()
    for name in chosen:
        print(f"\n=== {name}", flush=True)
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / f"bench_{name}.py")],
            cwd=REPO,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:
            if not NOISE.match(line):
                print(line, end="", flush=True)
            if line.startswith("RESULT "):
                results.append(line.removeprefix("RESULT ").rstrip())
        if process.wait() != 0:
            results.append(f"{name}: FAILED (exit {process.returncode})")
        print(f"({name}: {time.perf_counter() - began:.0f} s)")
    print(f"\n=== all results ({datetime.date.today()}, {time.perf_counter() - started:.0f} s in all)")
    print(machine())
    for line in results:
        print(f"  {line}")
    return 0 if not any("FAILED" in line for line in results) else 1


if __name__ == "__main__":
    sys.exit(main())
