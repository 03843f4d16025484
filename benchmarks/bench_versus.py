"""This checkout against an earlier revision, on the product path: the same short study, `harness run` from each.

Speed work on the training path is measured where users run it, in worker processes forked from the fork
server, not in one benchmark process: the tf.data input pipeline (harness/training/batches.py) made no
difference when one process called `train_run` repeatedly, and halved the time of a training in a worker.
The baseline revision is checked out with `git worktree` into a temporary folder; each side runs the spec's
first run in a fresh folder, in ABBA order, and the runs' logged training times are compared. Both sides must
log the same weights hash (the change must not change results).

    python benchmarks/bench_versus.py 03c0fa7 --spec studies/dacon-resnet.yaml --epochs 3 [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, describe, median, result, subprocess_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="git revision to compare with, e.g. 03c0fa7")
    parser.add_argument("--spec", type=Path, required=True, help="study whose base run is timed")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage of the timed run")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each: one run per side)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-versus-"))
    baseline = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
                   check=True, capture_output=True)
    try:
        spec = work / "study.json"
        spec.write_text(_shortened(args.spec.resolve(), args.epochs))
        sides = {"this checkout": REPO, f"baseline {args.baseline}": baseline}
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        hashes: set[str] = set()
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else reversed(sides):
                wall, weights = _one_run(sides[side], spec, work / f"{round_index}-{len(seconds[side])}-{side[:4]}")
                seconds[side].append(wall)
                hashes.add(weights)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    assert len(hashes) == 1, f"the two revisions trained different weights: {hashes}"
    print(f"versus {args.baseline}: {args.spec}'s base run, {args.epochs} epochs a stage, `harness run` from each "
          "checkout; identical weights hash on both")
    print("  training seconds (logged wall_time_s): " + describe(seconds))
    result(f"versus.{args.baseline}_over_this", median(seconds[f"baseline {args.baseline}"])
           / median(seconds["this checkout"]), note="seconds per training, baseline / this checkout")


def _one_run(checkout: Path, spec: Path, folder: Path) -> tuple[float, str]:
    """`python -m harness run` with `checkout` first on the path; the run's logged seconds and weights hash."""
    folder.mkdir(parents=True)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**subprocess_env(), "PYTHONPATH": str(checkout)}  # this checkout's harness, not the installed one
    subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--no-progress", "--tracking-uri", store,
                    "--storage", f"sqlite:///{folder / 'optuna.db'}"], cwd=checkout, env=env, check=True,
                   capture_output=True)
    query = ("import json, mlflow; mlflow.set_tracking_uri(%r); r = mlflow.search_runs(experiment_names=[%r]);"
             "r = r[r['tags.mlflow.runName'].str.contains('rep=')].iloc[0];"
             "print(json.dumps([float(r['metrics.wall_time_s']), r['tags.harness.weights_hash']]))")
    name = json.loads(spec.read_text())["name"]
    out = subprocess.run([sys.executable, "-c", query % (store, name)], env=env, check=True, capture_output=True,
                         text=True).stdout
    wall, weights = json.loads(out.strip().splitlines()[-1])
    return wall, weights


def _shortened(spec: Path, epochs: int) -> str:
    """The spec as JSON with one replicate, no factors, `epochs` per stage and absolute data and builder paths."""
    import yaml

    doc = yaml.safe_load(spec.read_text())
    doc |= {"repeats": 1, "factors": {}, "design": "factorial", "points": {}}
    for stage in doc["base"]["stages"].values():
        stage["epochs"] = epochs
    data = doc.get("data", {})
    if "path" in data:
        data["path"] = str((spec.parent / data["path"]).resolve())
    model = doc["base"].get("model", {})
    if ":" in model.get("builder", ""):
        file, function = model["builder"].rsplit(":", 1)
        model["builder"] = f"{(spec.parent / file).resolve()}:{function}"
    return json.dumps(doc)


if __name__ == "__main__":
    main()
