"""A user model's identity and a first check, without importing it: the builder's name, its source file's
content hash, and whether the file compiles, its imports exist and it defines the builder.

The hash goes into the run key, so editing a builder file never silently reuses runs trained by its old
version. Nothing is executed here: the file is only read (a `package.module` is located, not imported).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import SpecError

if TYPE_CHECKING:
    from harness.study.spec import StudySpec


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


def check_sources(spec: StudySpec) -> None:
    """`check_source` for every builder the spec names: its base model's, a `model.builder` factor's levels and
    its points'."""
    refs = [spec.base.model.builder, *spec.factors.get("model.builder", []),
            *(point.get("model.builder") for point in spec.points.values())]
    for ref in dict.fromkeys(ref for ref in refs if isinstance(ref, str)):
        check_source(ref)


def check_source(ref: str) -> None:
    """Refuse, in one line, a builder file that cannot be imported, without running it or importing Keras.

    Building the model needs Keras (9-13 s of CPU to import the TensorFlow backend), so a typo would otherwise
    take that long to report: here a syntax error, a missing top-level import and a builder name the file does
    not define answer at once. Only what is certain is refused: imports inside functions, `if` or `try` blocks
    and relative imports are left to the build, which reports them too.
    """
    path, function = source_file(ref), ref.rsplit(":", 1)[1]
    where = f"model.builder {ref}"
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
        compile(tree, str(path), "exec")  # 'return' outside a function and the like fail only here
    except SyntaxError as err:
        raise SpecError(f"{where}: cannot import: {type(err).__name__}: {err}") from None
    except ValueError as err:  # null bytes in the source
        raise SpecError(f"{where}: cannot import: {path.name}: {err}") from None
    for statement in tree.body:
        for name in _absolute_imports(statement):
            if _missing(name):
                raise SpecError(f"{where}: cannot import: ModuleNotFoundError: No module named '{name}' "
                                f"({path.name}, line {statement.lineno})")
    defined = _top_level_names(tree.body)
    if function not in defined and not _binds_names_dynamically(tree):
        functions = ", ".join(n for n, kind in defined.items() if kind == "function" and not n.startswith("_"))
        raise SpecError(f"{where}: no function '{function}' in {path}; defined: {functions or 'none'}")


def _absolute_imports(statement: ast.stmt) -> list[str]:
    """The top-level package each name of an `import x.y` / `from x.y import z` statement needs."""
    if isinstance(statement, ast.Import):
        return [alias.name.split(".")[0] for alias in statement.names]
    if isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
        return [statement.module.split(".")[0]]
    return []


def _missing(package: str) -> bool:
    """True only when the import system certainly cannot find `package` (a top-level name: nothing is run)."""
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):  # a module without a spec (e.g. __main__): leave it to the build
        return False


def _top_level_names(body: list[ast.stmt]) -> dict[str, str]:
    """Names a module binds outside its functions and classes, including inside `if`/`try`/`with` blocks."""
    names: dict[str, str] = {}
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            names[statement.name] = "function"
        elif isinstance(statement, ast.ClassDef):
            names[statement.name] = "class"
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            names.update({(alias.asname or alias.name).split(".")[0]: "import" for alias in statement.names})
        else:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.setdefault(node.id, "value")
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.setdefault(node.name, "function" if not isinstance(node, ast.ClassDef) else "class")
    return names


def _binds_names_dynamically(tree: ast.Module) -> bool:
    """`from x import *`, `globals()[...]` or a module `__getattr__`: the builder may exist without a definition."""
    return any((isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names))
               or (isinstance(node, ast.Name) and node.id in ("globals", "__getattr__", "setattr", "exec"))
               or (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
               for node in ast.walk(tree))
