"""The bottom floor: atomic file writes and the crash-test hook, used by every layer above.

A file a harness command writes (cache entry, report, submission, contest CSV) appears whole or not at all:
it is written to a temp file in the same folder, fsynced and renamed over the target. A crash in between
leaves the old file (or none), never half a file that a later run would trust.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

KILL_AT_ENV = "HARNESS_KILL_AT"  # crash tests: "point" or "point:marker-file" SIGKILLs this process once there
OOM_AT_ENV = "HARNESS_OOM_AT"  # fault tests: the same form raises MemoryError there (every time without a marker)


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A stream whose content replaces `path` only when the block ends without an exception."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        kill_point("atomic-write")  # crash tests: the content is written but not yet in place
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    _fsync_directory(path.parent)


def write_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically."""
    with atomic_output(path, "w") as stream:
        stream.write(text)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable; not possible on every platform."""
    try:
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def kill_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process at a named point, once (a marker file records that it fired)."""
    if _fires(KILL_AT_ENV, name):
        os.kill(os.getpid(), signal.SIGKILL)


def fault_point(name: str) -> None:
    """Fault-test hook: raise MemoryError at a named point, as an allocation that fails there would."""
    if _fires(OOM_AT_ENV, name):
        raise MemoryError(f"injected by {OOM_AT_ENV} at '{name}'")


def _fires(variable: str, name: str) -> bool:
    point, _, marker = os.environ.get(variable, "").partition(":")
    if point != name:
        return False
    if marker:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return False
    return True


def absolute_sqlite_url(url: str, store: str) -> str:
    """A `sqlite:///` URL made absolute with its folder created (other URLs unchanged); `store` names it in errors."""
    from harness.errors import HarnessError

    if not url.startswith("sqlite:///"):
        return url
    path = Path(url.removeprefix("sqlite:///")).resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarnessError(f"{store} '{url}' is unreachable: {err.strerror}") from None
    return f"sqlite:///{path}"
