"""Train a seed-batched study's runs in one fresh jax process: all in one batch, two of them in another order, the
first alone in a padded batch and alone one at a time, and two with a diverging learning rate; print weights
hashes, loss curves and the diverging runs' outcomes as JSON.

Used by test_seed_batch.py: `python tests/seed_batch_hashes.py SPEC`.
"""

import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

from harness.execution.prepared import prepare
from harness.study.spec import TrainingConfig, load_spec
from harness.training import determinism


def main(spec_path: str, cache_dir: Path) -> None:
    study = prepare(load_spec(spec_path))
    runs = study.runs
    determinism.configure_process(runs[0].config.determinism, runs[0].config.backend)
    from harness.training.seed_batch import train_batch
    from harness.training.train import train_run

    images_for = partial(study.data.images_for, cache_dir=cache_dir)
    data = (study.data.ids, study.data.digits, images_for)

    def hashes(batch: list) -> dict[str, str]:
        results = train_batch(batch, *data)
        assert all(r.status == "FINISHED" for r in results), [r.failure_reason for r in results]
        return {r.run.run_key: r.weights_hash for r in results}

    together = hashes(runs)
    regrouped = hashes([runs[-1], runs[0]])  # other companions, other lanes
    lane = train_batch(runs[:1], *data)[0]  # no companions: padded with copies of itself
    alone = train_run(runs[0], *data)
    curves = {name: [row["loss"] for row in result.history] for name, result in (("lane", lane), ("alone", alone))}
    diverging = [replace(run, config=run.config.model_copy(update={"training": TrainingConfig(
        optimizer="sgd", learning_rate=1e30, batch_size=32)})) for run in runs[:2]]
    failed = [[result.status, result.failure_reason] for result in train_batch(diverging, *data)]
    print(json.dumps({"together": together, "regrouped": regrouped, "padded": {lane.run.run_key: lane.weights_hash},
                      "curves": curves, "diverging": failed}))


if __name__ == "__main__":
    main(sys.argv[1], Path.cwd() / "cache")
