"""What `harness explain`'s divergence trace costs: replaying two runs for their first epoch, against one ordinary
epoch of the same training.

The run is a study's base config (default `studies/dacon-resnet.yaml`: the letter ResNet on the real contest data,
one thread per process). Ordinary: a fresh spawned process that configures itself as a worker does, builds and
trains one epoch through `train_run` (its wall time, imports included, and the epoch's own `epoch_time_s`). Trace:
`harness.execution.trace.trace` of the same config against itself for the first epoch of the study's training
(two fresh processes side by side, a hash of every weight after each step, in lockstep). Rounds alternate
(ordinary, trace, trace, ordinary, ...).

    nice -n 5 python benchmarks/bench_trace.py [--spec studies/dacon-resnet.yaml] [--steps K] [--rounds 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, describe, median, quiet_tensorflow, result


def ordinary_epoch(config, data: dict, queue) -> None:
    """One epoch as a worker trains it, in this fresh process: (wall s with imports, the epoch's own s)."""
    started = time.perf_counter()
    quiet_tensorflow()
    from harness.study.design import effective_seeds, make_run, resolve_stages
    from harness.study.sections import DataConfig
    from harness.training import determinism

    determinism.configure_process(config.determinism, config.backend)
    from harness.training.sources import load_study_data
    from harness.training.train import train_run

    study_data = load_study_data(DataConfig.model_validate(data))
    first = config.stage_order[0]
    one = config.model_copy(update={"stages": {first: config.stages[first].model_copy(update={"epochs": 1})},
                                    "stage_order": [first]})
    run = make_run("bench", 0, {}, one, effective_seeds(one, 0), resolve_stages(one, study_data.images.shape[1]),
                   study_data.fingerprint)
    cache = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    outcome = train_run(run, study_data.ids, study_data.digits, lambda stage: study_data.images_for(stage, cache),
                        side=study_data.side, n_classes=study_data.n_classes)
    assert outcome.status == "FINISHED", outcome.failure_reason
    queue.put((time.perf_counter() - started, outcome.history[0]["epoch_time_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "studies" / "dacon-resnet.yaml")
    parser.add_argument("--steps", type=int, help="steps to trace (default: the first epoch)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    quiet_tensorflow()
    from harness.execution.trace import trace
    from harness.study.spec import load_spec

    spec = load_spec(args.spec)
    config = spec.base.model_copy(update={"seeds": spec.base.seeds.model_copy(update={"fresh": []})})
    data = spec.data.model_dump(mode="json", exclude_defaults=True)
    context = mp.get_context("spawn")
    times: dict[str, list[float]] = {"ordinary": [], "trace": []}
    epochs: list[float] = []
    traced = None
    for index in range(args.rounds):
        for name in ("ordinary", "trace") if index % 2 == 0 else ("trace", "ordinary"):
            started = time.perf_counter()
            if name == "trace":
                traced = trace((config, config), (data, data), args.steps)
                assert traced["divergence"] is None, traced["divergence"]
            else:
                queue = context.Queue()
                process = context.Process(target=ordinary_epoch, args=(config, data, queue))
                process.start()
                wall, epoch = queue.get()
                process.join()
                epochs.append(epoch)
            times[name].append(time.perf_counter() - started)
    print(describe(times), f"; the ordinary epoch itself: {describe({'epoch': epochs})}; "
          f"trace compared {traced['steps']} steps; its timing: {traced['timing']}", file=sys.stderr)
    result("trace_s", median(times["trace"]), note=f"{traced['steps']} steps, 2 replays side by side")
    result("ordinary_epoch_process_s", median(times["ordinary"]), note="fresh process: imports, build, 1 epoch")
    result("ordinary_epoch_s", median(epochs), note="the epoch alone")
    result("trace_over_ordinary_process", median(times["trace"]) / median(times["ordinary"]))


if __name__ == "__main__":
    main()
