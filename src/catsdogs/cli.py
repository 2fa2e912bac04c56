"""The `catsdogs` command: predictions on new photos, and the offline demo."""

from __future__ import annotations

import argparse
import json
import sys

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

    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
