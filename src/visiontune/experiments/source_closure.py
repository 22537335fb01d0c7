"""Which of the package's source files a module imports, read from the source (lazy imports
inside functions included), without importing anything.

dvc.yaml's stage deps must list a stage script's closure (a test checks it), and a sweep
cell's stored result is keyed by the closure of the code that trains it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def import_closure(script: Path) -> set[Path]:
    """Every visiontune source file ``script`` imports, directly or through others, package
    ``__init__`` files included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_modules(todo.pop()):
            path = _module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def _imported_modules(path: Path) -> set[str]:
    """Names of the visiontune modules ``path`` imports, anywhere in its code, with the
    packages above them (whose ``__init__`` runs first)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("visiontune"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("visiontune"))
    parts = [name.split(".") for name in names]
    return {".".join(part[:end]) for part in parts for end in range(1, len(part) + 1)}


def _module_file(name: str) -> Path | None:
    base = PACKAGE.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module, not a module
