"""The project's pipeline files, copied into a scratch folder: what the tests and the benchmarks run `dvc`
in (tests/conftest.py's repositories, benchmarks/benchmark.py, benchmarks/shared_cache.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", ".dvcignore", ".gitignore", "configs", "src", ".dvc/config", ".dvc/.gitignore",
                 "data/exclude.csv"]


def copy_project(repo: Path) -> Path:
    """`repo`, created, holding the pipeline's files (no params.yaml, no git: the caller's to add)."""
    repo.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    return repo
