"""The second queued experiment decodes nothing: two experiments through `dvc queue start -j 1`, each in its
own fresh copy of the repository, sharing the per-user caches (catsdogs.caches).

    python benchmarks/shared_cache.py [--images-per-class 1000] [--side-range 250 500] [--size 64]

In a temporary git + DVC repository holding this project's pipeline: the synthetic archive (`--images-per-class`
per class, photos of `--side-range` pixels, about the real archive's), a tiny model, 1 epoch, no SavedModel or
ONNX export; download and filter run in the workspace and are committed, the caches start empty (a temporary
CATSDOGS_CACHE_DIR). Then two experiments with different learning rates are queued and run one after the other.
From each run's log (`dvc queue logs NAME`): what each stage did with the decoded images (decoded, with its
seconds, or reused), the train stage's fit and whole time, and the run's wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from catsdogs import caches
from catsdogs.commands.demo import merge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from projectcopy import copy_project  # noqa: E402 (the tests' scratch repositories, made the same way)
RATES = {"first": "1e-3", "second": "3e-3"}


def run(*command, cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def make_repo(repo: Path, overrides: dict, env: dict) -> None:
    """The project's pipeline files and params with `overrides`, committed (as tests/conftest.py does)."""
    copy_project(repo)
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(yaml.safe_load(shown.stdout), overrides), sort_keys=False))
    run("git", "init", "-q", cwd=repo, env=env)
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-qm", "project", cwd=repo, env=env)


def wait_for_queue(repo: Path, env: dict) -> None:
    while True:
        table = run(sys.executable, "-m", "dvc", "queue", "status", cwd=repo, env=env)
        if not any(w in line.split() for line in table.splitlines() for w in ("Queued", "Running")):
            return
        time.sleep(3)


def summarize(log: str) -> dict:
    """What a run's log says about the decoded images and the train stage."""
    stages = re.findall(r"^Running stage '(\w+)'", log, re.M)
    decoded = [float(s) for s in re.findall(r"^decoded \d+ images in ([\d.]+) s into", log, re.M)]
    return {"stages": stages, "decoded": decoded, "reused": len(re.findall(r"^reusing decoded images from", log, re.M)),
            "fit": re.search(r"^trained \d+ epochs in (\d+) s", log, re.M).group(1),
            "train_stage": re.search(r"^train stage: ([\d.]+) s in all", log, re.M).group(1),
            "images": re.search(r"^(\d+) images of \d+ classes", log, re.M).group(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--side-range", type=int, nargs=2, default=[250, 500], metavar=("MIN", "MAX"))
    parser.add_argument("--size", type=int, default=64, help="data.image_size, square")
    args = parser.parse_args()
    overrides = {
        "epochs": 1,
        "download": {"source": "synthetic", "synthetic": {"images_per_class": args.images_per_class,
                                                          "side_range": args.side_range}},
        "data": {"image_size": [args.size, args.size], "batch_size": 32},
        "model": {"entry_width": 4, "block_widths": [8], "exit_width": 8, "bn_momentum": 0.9},
        "export": {"formats": []},
    }
    with tempfile.TemporaryDirectory(prefix="shared-cache-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, DVC_NO_ANALYTICS="1", TQDM_DISABLE="1", **{caches.ENV: str(tmp / "caches")},
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                   GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
        repo = tmp / "repo"
        make_repo(repo, overrides, env)
        run(sys.executable, "-m", "dvc", "repro", "filter", cwd=repo, env=env)
        run("git", "add", "-A", cwd=repo, env=env)
        run("git", "commit", "-qm", "data", cwd=repo, env=env)
        for name, rate in RATES.items():
            run(sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.learning_rate={rate}",
                cwd=repo, env=env)
        started = time.perf_counter()
        run(sys.executable, "-m", "dvc", "queue", "start", "-j", "1", cwd=repo, env=env)
        wait_for_queue(repo, env)
        wall = time.perf_counter() - started
        print(f"{len(RATES)} queued experiments, -j 1, caches empty at first; {wall:.0f} s for the queue")
        for name, rate in RATES.items():
            s = summarize(run(sys.executable, "-m", "dvc", "queue", "logs", name, cwd=repo, env=env))
            decode = (f"decoded once in {s['decoded'][0]:.1f} s, reused {s['reused']} times" if s["decoded"]
                      else f"decoded nothing, reused {s['reused']} times")
            print(f"{name} (train.learning_rate={rate}): {s['images']} images, stages {', '.join(s['stages'])}; "
                  f"{decode}; train stage {s['train_stage']} s (fit {s['fit']} s)")
        files, size = caches.usage(tmp / "caches" / caches.IMAGES)
        print(f"image cache: {files} file(s), {caches.human(size)}")


if __name__ == "__main__":
    main()
