"""The project's import graph, read from the sources with `ast`: what test_dvc_yaml checks dvc.yaml's code
dependencies against, and test_architecture checks the package boundaries and cycles with."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "catsdogs"


def module_file(name: str) -> Path:
    """src/catsdogs/a/b.py for "catsdogs.a.b"."""
    return ROOT / "src" / Path(*name.split(".")).with_suffix(".py")


def all_modules() -> list[str]:
    """Every catsdogs module but the packages' (empty) __init__ files."""
    return sorted(".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
                  for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


def imported_modules(path: Path, deferred: bool = True) -> set[str]:
    """The catsdogs modules a file imports: at the top, and with `deferred` also inside functions (after the
    backend is chosen)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if deferred else tree.body
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("catsdogs.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "catsdogs":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if module_file(submodule).exists() else node.module)
    return found - {"catsdogs"}


def transitive_files(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(module_file(name)))
    return {module_file(name).relative_to(ROOT).as_posix() for name in seen}
