"""A stand-in training for supervisor tests: "epochs" of 0.1 s that honour a stop request like the real one
(`train.STOP_REQUESTED`, checked at each epoch's end), recording start and clean stop in files named by pid."""

import os
import time
from pathlib import Path


def fake_training(out: str, epochs: int = 600) -> None:
    from harness.training.train import STOP_REQUESTED

    Path(out, f"{os.getpid()}.started").write_text("")
    for _ in range(epochs):
        time.sleep(0.1)
        if STOP_REQUESTED.is_set():
            Path(out, f"{os.getpid()}.stopped").write_text("at the end of an epoch")
            raise KeyboardInterrupt


def timed_work(out: str, name: str, epochs: int, until: str = "") -> None:
    """`epochs` fake epochs, or fewer once the file `until` appears in `out`; its start and end times in
    `<name>.start` / `<name>.end` (monotonic clock)."""
    Path(out, f"{name}.start").write_text(repr(time.monotonic()))
    for _ in range(epochs):
        if until and Path(out, until).exists():
            break
        time.sleep(0.1)
    Path(out, f"{name}.end").write_text(repr(time.monotonic()))


def pids(out: Path, suffix: str) -> set[int]:
    return {int(path.stem) for path in out.glob(f"*.{suffix}")}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
