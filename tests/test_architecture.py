"""The package's plan, checked: the Keras boundary, the layers that may import each other, no import cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from conftest import ENV, ROOT
from importgraph import all_modules, imported_modules, module_file

MODULES = all_modules()
KERAS_SIDE = "catsdogs.training."
FRAMEWORKS = ("keras", "tensorflow", "jax")
# Imported last-first: a module of the base (catsdogs.<name>) imports no sub-package; data, evaluation and
# serving import the base and data, never stages or commands; only commands and stages sit on top.
TOP = ("catsdogs.stages.", "catsdogs.commands.")


# Imported by the driver before it forks: none of them loads a framework (checked), and each child then
# imports only what a module adds to them, in milliseconds instead of a fresh interpreter's second.
PRELOADED = ("numpy", "yaml", "PIL.Image", "psutil", "tqdm")
DRIVER = """
import importlib, json, os, sys
frameworks, preloaded, modules = json.loads(sys.argv[1])
for name in preloaded:
    importlib.import_module(name)
assert not [f for f in frameworks if f in sys.modules], "a preloaded package loads a framework"
found = {}
for module in modules:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a copy of the driver: import the module alone, say which frameworks came with it
        os.close(read)
        try:
            importlib.import_module(module)
            report = [f for f in frameworks if f in sys.modules]
        except BaseException as error:
            report = {"error": f"{type(error).__name__}: {error}"}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found[module] = json.loads(pipe.read())
    os.waitpid(child, 0)
print(json.dumps(found))
"""


def frameworks_loaded_by_import(modules: list[str]) -> dict[str, list[str]]:
    """{module: the frameworks in sys.modules after importing it alone}, each in a fresh fork of a driver
    that has imported nothing of the project."""
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([FRAMEWORKS, PRELOADED, modules])],
                          capture_output=True, text=True, env={**ENV, "KERAS_BACKEND": "jax"}, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {m: r["error"] for m, r in found.items() if isinstance(r, dict)}
    assert not failed, f"importing these failed: {failed}"
    return found


def imports_keras_at_the_top(module: str) -> bool:
    """A top-level `import keras…`/`from keras…`, or of a training module that has one: what loads Keras
    when the module is imported (read from the source: importing each would take seconds apiece)."""
    tree = ast.parse(module_file(module).read_text(encoding="utf-8"))
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(name == "keras" or name.startswith("keras.") for name in names):
            return True
    return any(imports_keras_at_the_top(m) for m in imported_modules(module_file(module), deferred=False)
               if m.startswith(KERAS_SIDE) and m != module)


@pytest.fixture(scope="module")
def loaded():
    return frameworks_loaded_by_import([m for m in MODULES if not m.startswith(KERAS_SIDE)])


def test_keras_is_imported_by_the_training_package_only(loaded):
    outside = {m: f for m, f in loaded.items() if f}
    assert not outside, f"these modules import a framework when imported (move them into catsdogs.training, or " \
                        f"import it inside a function): {outside}"


def test_the_check_sees_a_framework_that_comes_with_an_import():
    [(module, frameworks)] = frameworks_loaded_by_import(["catsdogs.training.augment"]).items()
    assert module == "catsdogs.training.augment" and "keras" in frameworks


def test_the_training_package_holds_only_keras_modules():
    inside = [m for m in MODULES if m.startswith(KERAS_SIDE)]
    assert len(inside) >= 6
    assert [m for m in inside if not imports_keras_at_the_top(m)] == []


def graph(deferred: bool = True) -> dict[str, set[str]]:
    return {m: {d for d in imported_modules(module_file(m), deferred) if d in MODULES} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (as the path that closes it), by depth-first search."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle_even_through_imports_inside_functions():
    assert cycles(graph(deferred=True)) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def layer(module: str) -> int:
    """0: the base (catsdogs.<name>); 1: data, training, evaluation, serving; 2: stages and commands."""
    if module.startswith(TOP):
        return 2
    return 1 if module.count(".") == 2 else 0


def test_modules_import_only_their_own_layer_or_below():
    upward = {(m, d) for m, deps in graph().items() for d in deps if layer(d) > layer(m)}
    assert not upward, f"imports of a higher layer: {sorted(upward)}"


def test_stages_never_import_each_other_nor_commands():
    wrong = {(m, d) for m, deps in graph().items() if m.startswith("catsdogs.stages.")
             for d in deps if d.startswith(TOP)}
    assert not wrong, sorted(wrong)


def test_the_base_imports_no_sub_package():
    wrong = {(m, d) for m, deps in graph().items() if layer(m) == 0 for d in deps if layer(d) != 0}
    assert not wrong, sorted(wrong)
