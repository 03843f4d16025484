"""Stop signals, parent and worker side: SIGINT, SIGTERM and SIGHUP end a study cleanly, and no worker outlives
its parent.

The parent (every command) turns each of them into `Interrupted`, a KeyboardInterrupt that remembers the signal,
and sets `STOPPING`, which the supervisor checks on every poll (an exception raised inside a library callback
can be swallowed; the flag cannot). It then asks its workers to stop and exits 128 + the signal's number.

A worker watches the command that owns it (a pidfd, readable once that process ends, SIGKILL included) and
sends itself SIGTERM when it ends; it also asks the kernel for SIGTERM when its own parent dies (Linux
`PR_SET_PDEATHSIG`: the fork server that started it). Any stop signal makes it finish the current epoch, mark
its run KILLED, give the trial back to the queue and exit; SIGALRM ends it if that takes longer than
`STOP_TIMEOUT_S`, and the watcher SIGKILLs it if it still lives after that.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT_S = 60  # a stopped worker finishes its epoch and marks its run before this, or is killed
STOPPING = threading.Event()
_RECEIVED: list[int] = []
_PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `exit_code` is the shell's convention, 128 + its number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def received() -> int:
    """The first stop signal this process got (SIGINT when none: a KeyboardInterrupt raised by other means)."""
    return _RECEIVED[0] if _RECEIVED else signal.SIGINT


def install_parent() -> dict[int, Any]:
    """Every stop signal raises `Interrupted` in the main thread and sets `STOPPING`; returns the old handlers."""
    return {signum: signal.signal(signum, _parent_handler) for signum in STOP_SIGNALS}


def restore(handlers: dict[int, Any]) -> None:
    """Put back what `install_parent` replaced (the CLI called in-process, by tests)."""
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _parent_handler(signum: int, _frame: Any) -> None:
    _RECEIVED.append(signum)
    STOPPING.set()
    raise Interrupted(signum)


def install_worker(stop_requested: threading.Event, parent_pid: int) -> None:
    """Stop signals set `stop_requested` (checked at each epoch's end); a second Ctrl-C raises at once.

    `parent_pid` is the command that owns this worker. It is not the worker's own parent when a fork server
    started it, and the server lives on while any worker does, so the worker watches the command itself."""

    def handler(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and signal.SIGINT in _RECEIVED:  # Ctrl-C twice; the parent's SIGTERM is not
            raise Interrupted(received())
        _RECEIVED.append(signum)
        stop_requested.set()
        signal.alarm(STOP_TIMEOUT_S)  # default action of SIGALRM: the process ends, whatever it is stuck in

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """The backstop that needs neither the kernel's death signal nor the main thread: once the parent is gone,
    signal SIGTERM (the clean stop) and SIGKILL this process if it still lives `STOP_TIMEOUT_S` later. The
    Python handler that arms SIGALRM runs only when the main thread returns to the interpreter."""
    _wait_for_exit(parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_TIMEOUT_S + 5)
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_exit(pid: int, poll_s: float = 0.5) -> None:
    """Return once `pid` has ended: its pidfd turns readable then (Linux 5.3+); elsewhere poll it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        return
    except (AttributeError, OSError):  # no pidfd here
        while _alive(pid):
            time.sleep(poll_s)
        return
    select.select([pidfd], [], [])
    os.close(pidfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM when the parent process ends, SIGKILL included; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
