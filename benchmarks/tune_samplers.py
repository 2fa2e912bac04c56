"""TPE against random search with the same budget: the best validation accuracy `catsdogs tune` finds.

    python benchmarks/tune_samplers.py [--trials 8] [--seeds 0 1 2] [--jobs 2] [--startup-trials 3]

One task where the learning rate matters: the demo's synthetic archive (`--images-per-class` per class, photos
of 64 to 96 pixels) and model (configs/demo.yaml) at `--size` pixels, `--epochs` epochs, and only
`train.learning_rate` to search, log-uniform over 1e-5 to 1 (too low learns nothing in a few epochs, too high
diverges). In a temporary git + DVC repository holding this
project's pipeline, the data is cleaned and committed once; then, for each sampler and seed, one study of
`--trials` trials run by `catsdogs tune` (no pruning: the samplers alone are compared), every trial a queued
DVC experiment. Prints each study's trials and best final.val_acc and, per sampler, the mean, spread and median
of the best, and how many trials came within 0.02 of their study's best.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from shared_cache import ROOT, make_repo, merge, run  # noqa: I001 (this folder's scripts: the same scratch repos)

GOOD = 0.02
SPACE = {"train.learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--startup-trials", type=int, default=3)
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    from catsdogs import caches
    from catsdogs.tuning import link, study as study_lib

    scratch = Path(tempfile.mkdtemp(prefix="tune-samplers-"))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", **{caches.ENV: str(scratch / "caches")},
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    repo = scratch / "repo"
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    make_repo(repo, merge(demo, {"epochs": args.epochs, "download": {"synthetic": {
        "images_per_class": args.images_per_class}}, "data": {"image_size": [args.size, args.size]},
        "export": {"formats": []}}), env)
    (repo / "configs" / "bench-search.yaml").write_text(yaml.safe_dump(SPACE))
    run(sys.executable, "-m", "dvc", "repro", "train", cwd=repo, env=env)
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-qm", "baseline", cwd=repo, env=env)
    print(f"{args.images_per_class} synthetic images per class at {args.size}x{args.size}, the demo's model, "
          f"{args.epochs} epochs; searching "
          f"train.learning_rate log-uniform in [1e-5, 1]; {args.trials} trials per study, {args.jobs} at a time, "
          f"{args.startup_trials} random start-up trials for TPE; seeds {args.seeds}", flush=True)

    import optuna

    best: dict[str, list[float]] = {}
    good: dict[str, list[int]] = {}  # trials within GOOD of their study's best: how much of the budget was well spent
    for sampler in args.samplers:
        for seed in args.seeds:
            name = f"{sampler}-{seed}"
            started = time.perf_counter()
            run(sys.executable, "-m", "catsdogs.commands.cli", "tune", "--space", "configs/bench-search.yaml",
                "--study", name, "--sampler", sampler, "--seed", str(seed), "--trials", str(args.trials),
                "--jobs", str(args.jobs), "--startup-trials", str(args.startup_trials), "--pruner", "none",
                cwd=repo, env=env)
            study = optuna.load_study(study_name=name, storage=link.connect(study_lib.default_url(repo)))
            values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
            best.setdefault(sampler, []).append(max(values))
            good.setdefault(sampler, []).append(sum(v >= max(values) - GOOD for v in values))
            tried = ", ".join(f"{t.params['train.learning_rate']:.2g} ({t.value:.3f})" for t in study.trials)
            print(f"{name}: best final.val_acc {max(values):.4f} of {len(values)} trials in "
                  f"{time.perf_counter() - started:.0f} s; learning rates tried (final.val_acc): {tried}", flush=True)
    print(f"\nsampler  best final.val_acc per seed       mean    spread (stdev)  median  trials within {GOOD} of the best")
    for sampler, values in best.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{sampler:<8} {', '.join(f'{v:.4f}' for v in values):<32} {statistics.mean(values):.4f}  "
              f"{spread:.4f}          {statistics.median(values):.4f}  {', '.join(map(str, good[sampler]))} "
              f"of {args.trials}")
    print(f"(scratch repository: {repo})")


if __name__ == "__main__":
    main()
