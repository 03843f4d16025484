"""The bottom floor: atomic file writes and the crash-test hook, used by every layer above.

A file a harness command writes (cache entry, report, submission, contest CSV) appears whole or not at all:
it is written to a temp file in the same folder, fsynced and renamed over the target. A crash in between
leaves the old file (or none), never half a file that a later run would trust.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from harness.errors import DiskWriteError

KILL_AT_ENV = "HARNESS_KILL_AT"  # crash tests: "point" or "point:marker-file" (comma-separated) SIGKILLs once there
OOM_AT_ENV = "HARNESS_OOM_AT"  # fault tests: the same form raises MemoryError there (every time without a marker)
FULL_AT_ENV = "HARNESS_FULL_AT"  # fault tests: the same form raises OSError ENOSPC there, as a full disk does
LOST_ANSWER_AT_ENV = "HARNESS_LOST_ANSWER_AT"  # fault tests: "call[:marker]": a run-storage call commits, then its
# connection drops before the answer arrives (execution/reconnecting.py)
# a full disk, a quota, a read-only or failing mount: named in one line, the old file kept
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A stream whose content replaces `path` only when the block ends without an exception."""
    import tempfile

    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
            disk_full_point("atomic-write")
            stream.flush()
            os.fsync(stream.fileno())
        kill_point("atomic-write")  # crash tests: the content is written but not yet in place
        os.replace(temporary, path)
    except OSError as err:
        _raise_write_error(err, str(path), path.parent)
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    _fsync_directory(path.parent)


@contextmanager
def writes_to(what: str) -> Iterator[None]:
    """Writes a library makes (MLflow's artifact store) that fail for lack of room or rights become one line
    naming `what`."""
    try:
        yield
    except OSError as err:
        _raise_write_error(err, what, None)


def _raise_write_error(err: OSError, what: str, folder: Path | None) -> None:
    """Re-raise `err` unless it is a failed write; then a DiskWriteError that says why, in words: the system's
    message, or for a short write (numpy's `tofile` reports one without an errno) the space left there."""
    import shutil

    if err.errno is not None and err.errno not in WRITE_ERRNOS:
        raise err
    reason = err.strerror or str(err)
    if not err.strerror and folder is not None:
        try:
            free = shutil.disk_usage(folder).free
            reason = f"{err}; {free} bytes free there" if free else "No space left on device"
        except OSError:
            pass
    raise DiskWriteError(what, reason) from None


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


def disk_full_point(name: str) -> None:
    """Fault-test hook: raise ENOSPC at a named point, as a write to a full disk would (no root, no tmpfs)."""
    if _fires(FULL_AT_ENV, name):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def answer_lost(call: str) -> bool:
    """Fault-test hook: whether the run storage's `call`, just committed, is to lose its answer (a dropped
    connection); the storage raises the disconnect, since only it knows the database driver's errors."""
    return _fires(LOST_ANSWER_AT_ENV, call)


def _fires(variable: str, name: str) -> bool:
    """`variable` holds "point" or "point:marker-file", or several comma-separated, so one study can meet several
    faults; a point with a marker fires once (the marker records it), one without fires every time."""
    for entry in os.environ.get(variable, "").split(","):
        point, _, marker = entry.partition(":")
        if point != name:
            continue
        if not marker:
            return True
        try:
            with open(marker, "x"):
                return True
        except FileExistsError:
            return False
    return False


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


def sqlite_from_template(url: str, key: str, build: Callable[[str], None]) -> None:
    """Start a SQLite database that does not exist yet as a copy of a template that `build(url)` made once per
    `key` (a schema version) in the user's cache folder.

    Creating a schema through its migrations costs seconds (MLflow 3's store: 2.8 s, one alembic step after
    another); copying the result costs milliseconds, and every study folder, every test, starts a new store.
    The copy is linked into place, so two processes creating one store at once cannot both win. Any failure
    (no writable cache, a race) leaves the database to be created the usual way.
    """
    import shutil
    import tempfile

    path = Path(url.removeprefix("sqlite:///"))
    if not url.startswith("sqlite:///") or path.exists():
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness"
    template = cache / f"{key}.db"
    copy = None
    try:
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as folder:
                built = Path(folder) / "template.db"
                build(f"sqlite:///{built}")
                os.replace(built, template)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".db", delete=False) as stream:
            copy = Path(stream.name)
        shutil.copyfile(template, copy)
        os.link(copy, path)
    except Exception:  # a cache only: whatever failed (disk, a race, the build itself), MLflow's migrations remain
        pass
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)
