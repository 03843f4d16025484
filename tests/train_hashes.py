"""Train runs of a study in one fresh process, in a given order; print their weights hashes and whether each
reused a compiled model, as JSON.

Used by test_determinism.py: `python tests/train_hashes.py SPEC INDEX [INDEX ...]`.
"""

import json
import sys
from functools import partial
from pathlib import Path

from harness.execution.prepared import prepare
from harness.study.spec import load_spec
from harness.training import determinism
from harness.training.train import train_run


def main(spec_path: str, indices: list[int], cache_dir: Path) -> None:
    study = prepare(load_spec(spec_path))
    runs = [study.runs[i] for i in indices]
    determinism.configure_process(runs[0].config.determinism, runs[0].config.backend)

    images_for = partial(study.data.images_for, cache_dir=cache_dir)
    hashes, sources = [], []
    for run in runs:
        result = train_run(run, study.data.ids, study.data.digits, images_for, side=study.data.side,
                           n_classes=study.data.n_classes)
        if result.status != "FINISHED":
            raise SystemExit(f"run {run.name} failed: {result.failure_reason}")
        hashes.append(result.weights_hash)
        sources.append(result.determinism["model"])
    print(json.dumps({"hashes": hashes, "model": sources}))


if __name__ == "__main__":
    main(sys.argv[1], [int(i) for i in sys.argv[2:]], Path.cwd() / "cache")
