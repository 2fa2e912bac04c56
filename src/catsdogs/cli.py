"""The `catsdogs` command: predictions on new photos, the offline demo, and the best experiment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catsdogs import experiments
from catsdogs.entry import run_main


def _predict(args) -> int:
    from catsdogs.predict import predict

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
    from catsdogs.demo import run

    return run(args.config, list(args.dvc_args))


def _best(args) -> int:
    return experiments.best(Path.cwd(), args.metric, args.lower, args.top, apply=args.apply, branch=args.branch)


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="catsdogs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help='"This image is 94.30%% cat and 5.70%% dog." for each image')
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--model", default="models/model.keras")
    predict.add_argument("--classes", default="models/classes.json", help="class names saved by the train stage")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(func=_predict)

    demo = commands.add_parser("demo", help="run the whole pipeline offline on a small synthetic dataset")
    demo.add_argument("--config", default="configs/demo.yaml", help="the params that differ from params.yaml")
    demo.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp run` arguments, after --")
    demo.set_defaults(func=_demo)

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
