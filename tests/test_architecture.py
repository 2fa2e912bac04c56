"""The package's plan, checked: the Keras boundary, the layers that may import each other, no import cycle."""

from __future__ import annotations

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


def frameworks_loaded_by_import() -> dict[str, list[str]]:
    """{module: the frameworks in sys.modules after importing it alone}, each in a fresh interpreter."""
    script = (
        "import importlib, json, subprocess, sys\n"
        f"frameworks = {FRAMEWORKS!r}\n"
        "module = sys.argv[1]\n"
        "importlib.import_module(module)\n"
        "print(json.dumps([f for f in frameworks if f in sys.modules]))\n"
    )
    found = {}
    for module in MODULES:
        done = subprocess.run([sys.executable, "-c", script, module], capture_output=True, text=True,
                              env={**ENV, "KERAS_BACKEND": "jax"}, cwd=ROOT, timeout=300)
        assert done.returncode == 0, f"importing {module} failed:\n{done.stderr[-2000:]}"
        found[module] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def loaded():
    return frameworks_loaded_by_import()


def test_keras_is_imported_by_the_training_package_only(loaded):
    outside = {m: f for m, f in loaded.items() if f and not m.startswith(KERAS_SIDE)}
    assert not outside, f"these modules import a framework when imported (move them into catsdogs.training, or " \
                        f"import it inside a function): {outside}"


def test_the_training_package_holds_only_keras_modules(loaded):
    inside = [m for m in MODULES if m.startswith(KERAS_SIDE)]
    assert len(inside) >= 6
    assert all("keras" in loaded[m] for m in inside), {m: loaded[m] for m in inside}


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
