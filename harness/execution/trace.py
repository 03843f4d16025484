"""Replay two runs side by side, each in its own fresh process, and find the first step, layer and kind where
they part (`harness explain`, automatically for identical configs with different weights, or `--trace`).

Each side is `harness.training.replay` in a spawned process: spawned, not forked from a fork server, because each
must choose its own backend, threads and determinism before Keras loads, as a fresh training process does (two
sides may differ in exactly that). They run in lockstep with this process: after every step each sends a hash
per weight; while the hashes agree both go on, up to K steps; where they differ, both are asked for what the
comparison needs (their initial weights at step 0, after which B takes A's and both go on from equal weights;
else the step taken apart from the state it started in) and stop. The comparison itself is
`harness.analysis.divergence`. Nothing is written to the stores: the replays' preprocessing cache and arrays
live in a temporary folder.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis import divergence
from harness.errors import HarnessError
from harness.study.spec import RunConfig
from harness.training.replay import ReplayRequest, serve

POLL_S = 1.0


class _Side:
    """One replay process and its end of the connection."""

    def __init__(self, label: str, request: ReplayRequest) -> None:
        context = mp.get_context("spawn")
        self.label = label
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(request, child), daemon=True, name=f"replay-{label}")
        self.process.start()
        child.close()

    def recv(self, *expected: str) -> tuple[Any, ...]:
        """The side's next message, one of `expected`; its error or its death is one line."""
        while not self.conn.poll(POLL_S):
            if not self.process.is_alive() and not self.conn.poll(0):
                raise HarnessError(f"the replay of {self.label} ended (exit code {self.process.exitcode}) "
                                   "before it answered")
        try:
            message = self.conn.recv()
        except EOFError:
            raise HarnessError(f"the replay of {self.label} ended (exit code {self.process.exitcode})") from None
        if message[0] == "error":
            raise HarnessError(f"the replay of {self.label}: {message[1]}")
        if message[0] not in expected:
            raise HarnessError(f"the replay of {self.label} said {message[0]}, expected {' or '.join(expected)}")
        return message

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def trace(configs: tuple[RunConfig, RunConfig], data: tuple[dict[str, Any], dict[str, Any]],
          steps: int | None = None, differences: dict[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """Replay A and B for K steps (None: the first epoch) and locate where they part. `differences`: the config
    keys and seeds they differ in (key → (A's, B's)), for the cause.

    Returns {steps (compared), divergence (None when identical), sides (each one's backend, determinism and
    device as read back), fingerprints, probe_reproduces, seconds, timing (start-up, steps, and per side the
    seconds spent hashing and copying state and waiting in lockstep)}."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="harness-trace-") as tmp:
        sides = []
        try:
            for label, config, section in zip(("A", "B"), configs, data, strict=True):
                folder = Path(tmp) / label
                folder.mkdir()
                sides.append(_Side(label, ReplayRequest(label, config, section, str(folder / "cache"), steps)))
            out = _lockstep(sides, Path(tmp), differences or {})
        finally:
            for side in sides:
                side.close()
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _lockstep(sides: list[_Side], tmp: Path, differences: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Step both sides until their hashes differ or K steps agree. Initial weights that differ are reported, then
    B takes A's and the replay goes on from equal weights, to where the steps themselves part (`from_a_weights`)."""
    started = time.perf_counter()
    infos = [side.recv("ready")[1] for side in sides]
    ready = time.perf_counter()
    limit = min(info["steps"] for info in infos)
    traces: tuple[list[list[str]], list[list[str]]] = ([], [])
    out: dict[str, Any] = {"sides": {s.label: i["determinism"] for s, i in zip(sides, infos, strict=True)},
                           "fingerprints": {s.label: i["fingerprint"] for s, i in zip(sides, infos, strict=True)},
                           "divergence": None, "probe_reproduces": None}
    initial, found = None, None
    while found is None:
        messages = [side.recv("step", "end") for side in sides]
        out["timing"] = {"start_s": round(ready - started, 1), "steps_s": round(time.perf_counter() - ready, 1),
                         **{f"{s.label}_{k}_s": round(v, 2) for s, m in zip(sides, messages, strict=True)
                            if m[0] == "step" for k, v in m[3].items()}}
        if any(message[0] == "end" for message in messages):  # a training shorter than K: all of it compared
            out["steps"] = len(traces[0]) - 1
            break
        out["steps"] = step = messages[0][1]
        for trace_of, message in zip(traces, messages, strict=True):
            trace_of.append(message[2])
        if traces[0][-1] != traces[1][-1]:
            if step == 0:
                initial = _initial(sides, infos, traces, tmp)
                initial["cause"] = divergence.cause(initial, *out["sides"].values(), differences)
                if not _align(sides, traces, tmp):
                    out["divergence"] = {**initial, "from_a_weights": None}
                    return out
            else:
                found = _taken_apart(sides, infos, traces, step, tmp, out)
                found["cause"] = divergence.cause(found, *out["sides"].values(), differences)
                break
        if step >= limit:
            break
        for side in sides:
            side.send("next")
    if initial is None:
        out["divergence"] = found
    else:
        initial["from_a_weights"] = found or {"identical_through": out["steps"]}
        out["divergence"] = initial
    return out


def _align(sides: list[_Side], traces: tuple, tmp: Path) -> bool:
    """B takes A's initial weights (as `_initial` dumped them); False when B's model cannot hold them bit for bit."""
    sides[1].send("load", str(tmp / sides[0].label / "weights.npz"))
    hashes = sides[1].recv("loaded")[1]
    if hashes != traces[0][0]:
        return False
    traces[1][0] = hashes
    return True


def _initial(sides: list[_Side], infos: list[dict], traces: tuple, tmp: Path) -> dict[str, Any]:
    arrays = []
    for side in sides:
        side.send("dump", str(tmp / side.label))
        with np.load(side.recv("dumped")[1]) as saved:
            arrays.append([saved[f"arr_{i}"] for i in range(len(saved.files))])
    return divergence.locate_initial(infos[0]["weights"], traces[0][0], traces[1][0], *arrays)


def _taken_apart(sides: list[_Side], infos: list[dict], traces: tuple, step: int, tmp: Path,
                 out: dict[str, Any]) -> dict[str, Any]:
    probes, reproduces = [], {}
    for side, trace_of in zip(sides, traces, strict=True):
        side.send("probe", str(tmp / side.label))
        _, path, meta, after = side.recv("probed")
        with np.load(path) as saved:
            probes.append({part: [(name, op, saved[f"{part}/{i}"], random)
                                  for i, (name, op, random) in enumerate(meta[part])] for part in meta})
        reproduces[side.label] = after == trace_of[-1]  # the step taken apart computed what `fit` computed
    out["probe_reproduces"] = reproduces
    return divergence.locate_step(step, *probes, traces[0][-1], traces[1][-1], infos[0]["weights"])
