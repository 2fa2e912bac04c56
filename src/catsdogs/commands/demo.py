"""The offline demo: the whole pipeline through `dvc exp run`, with the small overrides of configs/demo.yaml.

Overrides go through DVC's own `-S`, so params.yaml in the workspace shows exactly what the demo ran,
`dvc exp show` lists it beside other experiments, and `git checkout params.yaml` undoes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from catsdogs import backend, params
from catsdogs.commands import experiments
from catsdogs.errors import UserError


def overrides(tree: dict, prefix: str = "") -> list[str]:
    """Nested params as DVC `-S key=value` arguments (values in YAML flow style, which DVC parses)."""
    flat = []
    for key, value in tree.items():
        if isinstance(value, dict):
            flat += overrides(value, f"{prefix}{key}.")
        else:
            flat.append(f"{prefix}{key}={json.dumps(value)}")
    return flat


def merge(base: dict, tree: dict) -> dict:
    """`base` with the leaves of `tree` put over it, as DVC's `-S` would."""
    for key, value in tree.items():
        if isinstance(value, dict):
            merge(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


# What `dvc exp run` warns of each output that no dvc.lock records yet (a fresh clone: all of them) when it
# restores the workspace before running: nothing is missing, the stages are about to make them. A progress
# bar may have drawn on the same line first (what a "\r" ends is overwritten anyway).
NOTHING_TO_RESTORE = (r"(?:.*\r)?WARNING: No file hash info found for '.*'\. It won't be created\.\r?",
                      "WARNING: No file hash info found for '")


def run(config: str, extra_args: list[str]) -> int:
    path = Path(config)
    if not path.is_file():
        raise UserError(f"{path}: demo configuration not found (run from the repository root)")
    tree = params.read_yaml(path)
    if not isinstance(tree, dict):
        raise UserError(f"{path}: expected a mapping of params to override")
    # Validate the merged params before DVC starts anything.
    base = params.read_yaml(params.PARAMS_FILE)
    params.parse(merge(base, tree) if isinstance(base, dict) else base, f"{params.PARAMS_FILE} with {path}")

    env = dict(os.environ, PATH=experiments.this_python_first(os.environ.get("PATH")))
    command = [sys.executable, "-m", "dvc", "exp", "run"]
    for assignment in overrides(tree):
        command += ["-S", assignment]
    command += [a for a in extra_args if a != "--"]
    print("$ dvc " + " ".join(command[3:]), flush=True)
    quiet = backend.forwarder(NOTHING_TO_RESTORE)
    try:
        return subprocess.call(command, env=env, stderr=quiet.stdin)
    finally:
        quiet.stdin.close()
        quiet.wait()
