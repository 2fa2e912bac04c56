"""The `catsdogs` command: predictions on new photos, the offline demo, the data review, the best
experiment, the hyperparameter search and the shared caches."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from catsdogs import caches, tables
from catsdogs.commands import experiments, review, tune
from catsdogs.tuning import link, space, study
from catsdogs.serving.predict import TOP
from catsdogs.entry import run_main
from catsdogs.errors import UserError

PIPELINE = "dvc.yaml"
# review's inputs and where each is by default: (stage, the option of its command in dvc.yaml; "data": its first
# argument). The CLI's option is the same name.
REVIEW_INPUTS = {"data": ("train", "data"), "split": ("train", "--split"), "classes": ("train", "--classes"),
                 "predictions": ("evaluate", "--predictions"), "model": ("train", "--model"),
                 "filter_metrics": ("filter", "--metrics")}


def pipeline_path(given: str | None, stage: str, option: str) -> str:
    """`given`, or by default the path dvc.yaml's command of `stage` passes as `option` ("data": its first
    argument): the pipeline's own paths, written once, there."""
    if given is not None:
        return given
    import yaml

    flag = "--data" if option == "data" else option
    try:
        words = shlex.split(yaml.safe_load(Path(PIPELINE).read_text(encoding="utf-8"))["stages"][stage]["cmd"])[3:]
        return words[0] if option == "data" else words[words.index(option) + 1]
    except FileNotFoundError:
        raise UserError(f"{flag}: no default without {PIPELINE} here (run from the repository root, or pass "
                        f"{flag})") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, IndexError):
        raise UserError(f"{PIPELINE}: the {stage} stage's command gives no {option} to take {flag}'s default "
                        f"from: pass {flag}") from None


def _predict(args) -> int:
    from catsdogs.serving.predict import predict

    results = predict(args.paths, pipeline_path(args.model, "train", "--model"), args.classes, top=args.top)
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    for result in results:
        if result.error:
            print(result.sentence(), file=sys.stderr)
        elif not args.json:
            print(result.sentence(args.top))
    return 2 if failed else 0


def _demo(args) -> int:
    from catsdogs.commands.demo import run

    return run(args.config, list(args.dvc_args))


def _review(args) -> int:
    accepting = args.accept or args.accept_top is not None
    if args.kind and args.accept_top is None:
        raise UserError(f"--kind {' '.join(args.kind)}: only with --accept-top K (it picks the kinds whose first K "
                        "candidates to accept)")
    if args.accept_top is not None and args.accept_top < 1:
        raise UserError(f"--accept-top {args.accept_top}: accept the first K candidates of each kind, K at least 1")
    reviewing = {"--folds": args.folds, "--epochs": args.epochs, "--max-distance": args.max_distance}
    ignored = [flag for flag, value in reviewing.items() if value is not None]
    if accepting and ignored:
        raise UserError(f"{ignored[0]}: an option of the review itself, not of accepting its candidates: run them "
                        "one after the other")
    out = Path(args.out)
    exclude = Path(pipeline_path(args.exclude, "filter", "--exclude"))
    if accepting:
        added, already = review.accept(out / review.CANDIDATES_FILE, exclude, args.accept, args.accept_top,
                                       args.kind)
        for entry in added:
            print(f"excluded {entry.member}: {entry.reason}")
        if already:
            print(f"{len(already)} already listed in {exclude}")
        print(f"{len(added)} added to {exclude}: review it (git diff), then `dvc repro` and `dvc metrics diff`")
        return 0
    inputs = {name: Path(pipeline_path(getattr(args, name), *where)) for name, where in REVIEW_INPUTS.items()}
    summary = review.run(inputs["data"], inputs["split"], inputs["classes"], inputs["predictions"], inputs["model"],
                         out, args.image_cache, args.folds, args.epochs, args.max_distance, inputs["filter_metrics"])
    counts = ", ".join(f"{summary[f'{kind}_candidates']} {kind}" for kind in tables.CANDIDATE_KINDS)
    print(f"{counts} candidates in {out / review.CANDIDATES_FILE}; look at {out / review.CONTACT_SHEET}, then "
          "accept with `catsdogs review --accept MEMBER ...`")
    return 0


def _best(args) -> int:
    if args.top < 1:
        raise UserError(f"--top {args.top}: how many experiments to print, at least 1")
    return experiments.best(Path.cwd(), args.metric, args.lower, args.top, apply=args.apply, branch=args.branch)


def _tune(args) -> int:
    return tune.run(args)


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _cache(args) -> int:
    if args.clear:
        removed = caches.clear()
        if not removed:
            print(f"nothing to free: no cache in {caches.root()}")
        else:
            print(f"freed {caches.human(sum(size for *_, size in removed))}: "
                  + ", ".join(f"{where} ({_files(files)})" for _, where, files, _ in removed))
        return 0
    width = max(map(len, caches.KINDS))
    for kind in caches.KINDS:
        where = caches.path(kind)
        files, size = caches.usage(where)
        shown = f"{_files(files)}, {caches.human(size)}" if where.exists() else "not made yet"
        print(f"{kind:<{width}}  {where}  {shown}")
    return 0


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="catsdogs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help='"This image is 94.30%% cat and 5.70%% dog." for each image (the '
                                  'top three of more classes)')
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--model", help="a .keras file, a SavedModel folder or an .onnx file (models/export/ holds "
                         "all three; default: the train stage's --model in dvc.yaml)")
    predict.add_argument("--classes", help="class names (default: metadata.json beside the model, else classes.json)")
    predict.add_argument("--top", type=int, metavar="K", help="name the K most likely classes, most likely first "
                         f"(default: both of two classes in label order, else the top {TOP})")
    predict.add_argument("--json", action="store_true", help="machine-readable output (every class's probability)")
    predict.set_defaults(func=_predict)

    demo = commands.add_parser("demo", help="run the whole pipeline offline on a small synthetic dataset")
    demo.add_argument("--config", default="configs/demo.yaml", help="the params that differ from params.yaml")
    demo.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp run` arguments, after --")
    demo.set_defaults(func=_demo)

    reviewer = commands.add_parser("review", help="find likely label errors, images unlike the others (non_pet) and "
                                   "train/validation near-duplicates; accept them into the exclusion list")
    reviewer.add_argument("--accept", nargs="+", default=[], metavar="MEMBER",
                          help="append these candidates (their `member` in the report) to the exclusion list")
    reviewer.add_argument("--accept-top", type=int, metavar="K", help="append the first K candidates of each kind")
    reviewer.add_argument("--kind", nargs="+", choices=tables.CANDIDATE_KINDS,
                          help="with --accept-top: only these kinds")
    reviewer.add_argument("--exclude", help="the exclusion list (default: the filter stage's --exclude in dvc.yaml)")
    reviewer.add_argument("--out", default=review.OUT, help="where the report goes (default: %(default)s)")
    reviewer.add_argument("--folds", type=int,
                          help=f"cross-validation folds for the training subset (default: {review.FOLDS})")
    reviewer.add_argument("--epochs", type=int,
                          help="epochs of each fold's model (default: the `epochs` the model was trained with)")
    reviewer.add_argument("--max-distance", type=int, help=f"pHash bits (of {review.HASH_BITS}) within which two "
                          f"images are near-duplicates (default: {review.MAX_DISTANCE})")
    for name, (stage, option) in REVIEW_INPUTS.items():
        shown = "first argument" if option == "data" else option
        reviewer.add_argument("--" + name.replace("_", "-"), help=f"default: the {stage} stage's {shown} in dvc.yaml")
    reviewer.add_argument("--image-cache", type=Path, help=caches.IMAGES_OPTION_HELP)
    reviewer.set_defaults(func=_review)


    best = commands.add_parser("best", help="rank the experiments by a metric; apply or branch the best")
    best.add_argument("--metric", default=experiments.DEFAULT_METRIC,
                      help="path:key, or a key found in one metrics file: accuracy, f1 (the second class's "
                      "for two classes, the macro average for more), macro.f1, per_class_f1.CLASS, ... "
                      "(default: %(default)s)")
    order = best.add_mutually_exclusive_group()
    order.add_argument("--min", dest="lower", action="store_true", default=None, help="lower is better "
                       "(the default for a loss or seconds)")
    order.add_argument("--max", dest="lower", action="store_false", help="higher is better (the default otherwise)")
    best.add_argument("--top", type=int, default=experiments.TOP, help="how many to print (default: %(default)s)")
    act = best.add_mutually_exclusive_group()
    act.add_argument("--apply", action="store_true", help="bring the best into the workspace (dvc exp apply)")
    act.add_argument("--branch", metavar="NAME", help="make a git branch of the best (dvc exp branch)")
    best.set_defaults(func=_best)

    tuner = commands.add_parser("tune", help="search params with Optuna: each trial a named DVC experiment "
                                "(tune-<study>-<n>) run by DVC's queue; resumable, shareable (docs/tune.md)")
    tuner.add_argument("--space", default=space.DEFAULT_FILE, help="the search space (default: %(default)s)")
    tuner.add_argument("--study", help="the study's name (default: the space file's name, e.g. search)")
    tuner.add_argument("--trials", type=int, default=20, help="finished trials the study should have, counting "
                       "earlier runs' and other clones' (default: %(default)s)")
    tuner.add_argument("--jobs", type=int, default=1, help="trials at once: DVC queue workers (default: %(default)s)")
    tuner.add_argument("--timeout", type=float, metavar="SECONDS", help="start no trial after this long")
    tuner.add_argument("--objective", default=tune.DEFAULT_OBJECTIVE, help="the metric to optimize: path:key, or a key of "
                       "one metrics file, as `catsdogs best --metric` (default: %(default)s)")
    tuner.add_argument("--direction", choices=("maximize", "minimize"), help="default: minimize a loss or seconds, "
                       "maximize anything else")
    tuner.add_argument("--sampler", choices=study.SAMPLERS, default="tpe", help="default: %(default)s")
    tuner.add_argument("--pruner", choices=link.PRUNERS, default="median", help="stop trials whose epochs are "
                       "worse than the median of earlier trials' (default: %(default)s)")
    tuner.add_argument("--startup-trials", type=int, default=study.STARTUP_TRIALS, help="trials sampled at random and "
                       "never pruned before TPE and the pruner act (default: %(default)s)")
    tuner.add_argument("--seed", type=int, help="the sampler's seed (default: none, a new search each time)")
    tuner.add_argument("--storage", help="the study's database: postgresql://user:password@host/db to share it "
                       "between machines (default: SQLite in .dvc/tmp/tune/)")
    tuner.add_argument("--retry-failed", action="store_true", help="queue a failed trial's params once more")
    tuner.add_argument("--report", action="store_true", help="run nothing: print the best trial and write the "
                       f"study's figures into {tune.REPORT_DIR}/")
    tuner.set_defaults(func=_tune)

    cache = commands.add_parser("cache", help="where the caches shared by every experiment are (decoded images, "
                                f"JAX's compiled programs: ${caches.ENV} moves them), and their sizes")
    cache.add_argument("--clear", action="store_true", help="remove them (the next run decodes and compiles again)")
    cache.set_defaults(func=_cache)

    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
