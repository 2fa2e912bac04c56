"""Shared fixtures: the repository's own files, copied into temporary git + DVC repositories."""

from __future__ import annotations

import atexit
import copy
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from catsdogs import caches

from projectcopy import PROJECT_FILES, ROOT, copy_project  # noqa: F401 (tests import ROOT and PROJECT_FILES from here)


def committed_params_text() -> str:
    """params.yaml as committed (or staged, with `git add`): the workspace's copy is the user's to change
    (`catsdogs demo` and `dvc exp run -S` write into it), so no test depends on it. Outside a git checkout,
    the file."""
    shown = subprocess.run(["git", "show", ":params.yaml"], cwd=ROOT, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else (ROOT / "params.yaml").read_text()


COMMITTED_PARAMS_TEXT = committed_params_text()


def committed_params() -> dict:
    """A fresh copy of the committed params, to change freely."""
    return yaml.safe_load(COMMITTED_PARAMS_TEXT)
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

# The caches every experiment shares (catsdogs.caches) in a temporary folder of this test process, for the code
# run here and every process it starts: nothing lands in the user's ~/.cache, and no run of the user's is reused.
CACHE_DIR = tempfile.mkdtemp(prefix="catsdogs-caches-")
atexit.register(shutil.rmtree, CACHE_DIR, ignore_errors=True)
os.environ[caches.ENV] = CACHE_DIR

# One TensorFlow thread per pool in each process: the suite runs two test processes on two cores, each
# starting stages, and TensorFlow's default (a pool per core, whose threads spin while they wait) made them
# fight over the cores: a fifth more CPU time for the same work, measured on the slow own-images and review
# tests (user time 175 s -> 140 s, wall 122 s -> 105 s). A user's runs keep TensorFlow's defaults.
for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(variable, "1")

# Stages run `python -m catsdogs...` and tests run `dvc`: both must be this interpreter's.
ENV = dict(
    os.environ,
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    DVC_NO_ANALYTICS="1",
    GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
    GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
)


def run(*command, cwd, check=True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real command (dvc, git, python) and fail with its output when it fails."""
    result = subprocess.run(command, cwd=cwd, env=ENV, text=True, capture_output=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def stage_command(stage: str, data: str | None = None, **options: str) -> list[str]:
    """The stage's command exactly as dvc.yaml runs it, with this interpreter as `python`; `data` replaces
    its input path and `options` the values of its --options (jax_cache="x" for --jax-cache x), added if
    dvc.yaml passes none (the shared caches' folders are the stages' defaults)."""
    command = shlex.split(STAGES[stage]["cmd"])
    assert command[:2] == ["python", "-m"]
    command[0] = sys.executable
    if data is not None:
        command[3] = str(data)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag in command:
            command[command.index(flag) + 1] = str(value)
        else:
            command += [flag, str(value)]
    return command


def dvc(*args, cwd, check=True):
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def set_params(repo: Path, overrides: dict) -> None:
    """Put nested `overrides` over the repo's params.yaml."""
    from catsdogs.commands.demo import merge

    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


# Shared by many tests: never modify them; merge them into a copy (copy.deepcopy).
TINY_DATA = {
    "download": {"source": "synthetic",
                 "synthetic": {"images_per_class": 60, "side_range": [32, 48], "pathology_rate": 0.1, "seed": 3}},
    "filter": {"workers": 2},
}
TINY_TRAINING = {
    "epochs": 2,
    "data": {"image_size": [32, 32], "batch_size": 16},
    "model": {"entry_width": 4, "block_widths": [8], "exit_width": 8, "bn_momentum": 0.9},
    "train": {"learning_rate": 1.0e-3},
}

# A complete, valid params mapping for unit tests, independent of the workspace's params.yaml (which a demo run
# edits): never modify it, merge into a copy (copy.deepcopy).
def params_with(overrides: dict) -> dict:
    """The committed params with `overrides` put over them: a fresh copy, to change freely."""
    from catsdogs.commands.demo import merge

    return merge(committed_params(), copy.deepcopy(overrides))


def make_repo(repo: Path) -> Path:
    """A git repository at `repo` holding the project's pipeline files, with one commit, params untouched."""
    copy_project(repo)
    (repo / "params.yaml").write_text(COMMITTED_PARAMS_TEXT)
    run("git", "init", "-q", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "project", cwd=repo)
    return repo


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A cleaned image folder: 13 cats and 11 dogs, random 20x30 JPEGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in (("Cat", 13), ("Dog", 11)):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "img" / cls / f"{i}.jpg")
    return tmp_path / "img"
