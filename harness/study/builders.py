"""A user model's identity without importing it: the builder's name and its source file's content hash.

The hash goes into the run key, so editing a builder file never silently reuses runs trained by its old
version. Nothing is executed here: the file is only read (a `package.module` is located, not imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from harness.errors import SpecError


def source_file(ref: str) -> Path:
    """The file that defines `ref` (`/abs/models.py:build` or `package.module:build`); SpecError if none."""
    target = ref.rsplit(":", 1)[0]
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"model.builder: {path}: file not found; allowed: a .py file relative to the spec, "
                            "or package.module:function")
        return path
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as err:
        raise SpecError(f"model.builder: cannot find module '{target}': {err}") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise SpecError(f"model.builder: no module '{target}' on the path; allowed: a .py file relative to the "
                        "spec, or an importable package.module:function")
    return Path(found.origin)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def source_digest(ref: str) -> str:
    """sha256 (16 hex chars) of the builder's source file, memoized on (path, mtime, size)."""
    path = source_file(ref)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _DIGESTS[key]


def identity(ref: str) -> dict[str, str]:
    """What a run records of its builder: a machine-independent name and the source hash."""
    target, function = ref.rsplit(":", 1)
    name = f"{Path(target).name}:{function}" if target.endswith(".py") else ref
    return {"builder": name, "builder_sha256": source_digest(ref)}
