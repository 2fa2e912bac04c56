"""The `catsdogs` command: predictions on new photos, the offline demo, the data review and the best
experiment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catsdogs.commands import experiments
from catsdogs.entry import run_main


def _predict(args) -> int:
    from catsdogs.serving.predict import predict

    results = predict(args.paths, args.model, args.classes)
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    for result in results:
        if result.error:
            print(result.sentence(), file=sys.stderr)
        elif not args.json:
            print(result.sentence())
    return 2 if failed else 0


def _demo(args) -> int:
    from catsdogs.commands.demo import run

    return run(args.config, list(args.dvc_args))


def _review(args) -> int:
    from pathlib import Path

    from catsdogs.commands import review

    out = Path(args.out)
    if args.accept or args.accept_top is not None:
        added, already = review.accept(out / review.CANDIDATES_FILE, Path(args.exclude), args.accept,
                                       args.accept_top, args.kind)
        for entry in added:
            print(f"excluded {entry.member}: {entry.reason}")
        if already:
            print(f"{len(already)} already listed in {args.exclude}")
        print(f"{len(added)} added to {args.exclude}: review it (git diff), then `dvc repro` and "
              "`dvc metrics diff`")
        return 0
    summary = review.run(Path(args.data), Path(args.split), Path(args.classes), Path(args.predictions),
                         Path(args.model), out,
                         Path(args.image_cache), args.folds, args.epochs, args.max_distance)
    print(f"{summary['label_candidates']} label, {summary['non_pet_candidates']} non_pet and "
          f"{summary['duplicate_candidates']} duplicate candidates in {out / review.CANDIDATES_FILE}; "
          f"look at {out / review.CONTACT_SHEET}, then accept with `catsdogs review --accept MEMBER ...`")
    return 0


def _best(args) -> int:
    return experiments.best(Path.cwd(), args.metric, args.lower, args.top, apply=args.apply, branch=args.branch)


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="catsdogs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help='"This image is 94.30%% cat and 5.70%% dog." for each image')
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--model", default="models/model.keras",
                         help="a .keras file, a SavedModel folder or an .onnx file (models/export/ holds all three)")
    predict.add_argument("--classes", help="class names (default: metadata.json beside the model, else classes.json)")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(func=_predict)

    demo = commands.add_parser("demo", help="run the whole pipeline offline on a small synthetic dataset")
    demo.add_argument("--config", default="configs/demo.yaml", help="the params that differ from params.yaml")
    demo.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp run` arguments, after --")
    demo.set_defaults(func=_demo)

    review = commands.add_parser("review", help="find likely label errors, non-pet images and train/validation "
                                 "near-duplicates; accept them into the exclusion list")
    review.add_argument("--accept", nargs="+", default=[], metavar="MEMBER",
                        help="append these candidates (PetImages/Cat/1.jpg) to the exclusion list")
    review.add_argument("--accept-top", type=int, metavar="K", help="append the first K candidates of each kind")
    review.add_argument("--kind", nargs="+", choices=["label", "non_pet", "duplicate"],
                        help="with --accept-top: only these kinds")
    review.add_argument("--exclude", default="data/exclude.csv", help="the exclusion list (the filter's)")
    review.add_argument("--out", default="review", help="where the report goes")
    review.add_argument("--folds", type=int, help="cross-validation folds for the training subset (default: 2)")
    review.add_argument("--epochs", type=int, help="epochs of each fold's model (default: `epochs`)")
    review.add_argument("--max-distance", type=int,
                        help="pHash bits (of 64) within which two images are near-duplicates (default: 6)")
    review.add_argument("--data", default="data/clean/PetImages")
    review.add_argument("--split", default="models/split.csv")
    review.add_argument("--classes", default="models/classes.json")
    review.add_argument("--model", default="models/model.keras", help="the trained model (its features)")
    review.add_argument("--predictions", default="metrics/predictions.csv")
    review.add_argument("--image-cache", default=".cache/images")
    review.set_defaults(func=_review)


    best = commands.add_parser("best", help="rank the experiments by a metric; apply or branch the best")
    best.add_argument("--metric", default=experiments.DEFAULT_METRIC,
                      help="path:key, or a key found in one metrics file (default: %(default)s)")
    order = best.add_mutually_exclusive_group()
    order.add_argument("--min", dest="lower", action="store_true", default=None, help="lower is better "
                       "(the default for a loss or seconds)")
    order.add_argument("--max", dest="lower", action="store_false", help="higher is better (the default otherwise)")
    best.add_argument("--top", type=int, default=experiments.TOP, help="how many to print (default: %(default)s)")
    act = best.add_mutually_exclusive_group()
    act.add_argument("--apply", action="store_true", help="bring the best into the workspace (dvc exp apply)")
    act.add_argument("--branch", metavar="NAME", help="make a git branch of the best (dvc exp branch)")
    best.set_defaults(func=_best)

    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
