"""The package's shape: imports point down the layers, never up, and no module grows past ~400 lines (STYLE.md:
a module's length follows its job; one past ~400 usually holds two).

Layers, bottom first; a module may import its own layer and any layer below. `analysis` sits beside the
training side on purpose: it reads only runs tables, so another team's table can be analysed.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
LAYERS = ["errors", "files", "signals", "env", "devices", "study", "training", "tracking", "analysis", "execution",
          "report", "commands", "cli", "__main__"]
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            names |= {f"harness.{a.name}" for a in node.names} if node.module == "harness" else {node.module}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
    return names


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def test_every_module_is_in_a_layer():
    assert all(layer(m) >= 0 for m in modules() if m != "harness")


def test_imports_point_down():
    upward = [f"{m} imports {n}" for m, path in modules().items() for n in imported(path)
              if m != "harness" and n != "harness" and layer(n) > layer(m)]
    assert upward == []


def test_no_module_over_the_line_limit():
    long = {m: n for m, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
