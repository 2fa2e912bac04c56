"""`catsdogs predict` on each export format: start-up time, images/s and agreement, in one run.

    python benchmarks/predict_formats.py PHOTOS.tar [--export models/export]

PHOTOS.tar: a tar of image files (any layout). Each format runs as a fresh `catsdogs predict --json`
process, as a user runs it: once on one photo (its wall time is the start-up: imports, loading the model,
one prediction) and once on all photos (images/s from the difference, so decoding and prediction only).
Without --export, an export of the params.yaml architecture with its initial weights is made in a
temporary folder first: speed does not depend on the weights, agreement is checked all the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

FORMATS = {"keras": "model.keras", "savedmodel": "savedmodel", "onnx": "model.onnx"}


def untrained_export(folder: Path) -> Path:
    """models/export's layout for the params.yaml model with its initial weights."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from types import SimpleNamespace

    from catsdogs import params
    from catsdogs.serving import exports
    from catsdogs.training import model as model_lib

    p = params.load()
    model = model_lib.inference_model(model_lib.build(p.data.image_size, 2, p.model,
                                                      SimpleNamespace(flip=True, rotation=0.1), p.seed))
    model.save(folder / "model.keras")
    serving = model_lib.with_probabilities(model)
    serving.export(str(folder / "savedmodel"), format="tf_saved_model", verbose=False)
    serving.export(str(folder / "model.onnx"), format="onnx", verbose=False)
    (folder / exports.METADATA_FILE).write_text(json.dumps(
        exports.describe(["Cat", "Dog"], p.data.image_size, list(FORMATS), {}, {})))
    return folder


def timed_predict(model: Path, target: Path) -> tuple[float, list]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "catsdogs.commands.cli", "predict", "--json", "--model", str(model),
                             str(target)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 2):
        raise SystemExit(f"{model}: predict failed:\n{result.stderr[-2000:]}")
    return seconds, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a tar of photos")
    parser.add_argument("--export", type=Path, help="an export folder (default: an untrained one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(args.photos) as tar:
            tar.extractall(tmp / "photos", filter="data")
        files = sorted(p for p in (tmp / "photos").rglob("*") if p.is_file())
        export = args.export or untrained_export(tmp)
        print(f"{len(files)} photos; export {args.export or 'untrained, ' + str(export)}")
        print(f"{'format':<11} {'start-up s':>10} {'all s':>7} {'images/s':>9}")
        results = {}
        for name, file in FORMATS.items():
            one, _ = timed_predict(export / file, files[0])
            every, results[name] = timed_predict(export / file, tmp / "photos")
            print(f"{name:<11} {one:>10.2f} {every:>7.2f} {(len(files) - 1) / (every - one):>9.1f}")
        good = [r for r in results["keras"] if "probabilities" in r]
        print(f"{len(good)} predicted, {len(results['keras']) - len(good)} skipped as unreadable")
        for name in ("savedmodel", "onnx"):
            other = {r["path"]: r for r in results[name] if "probabilities" in r}
            difference = max(abs(p - other[r["path"]]["probabilities"][c])
                             for r in good for c, p in r["probabilities"].items())
            percent = sum(f"{100 * p:.2f}" != f"{100 * other[r['path']]['probabilities'][c]:.2f}"
                          for r in good for c, p in r["probabilities"].items())
            print(f"{name} vs keras: largest probability difference {difference:.2e}; "
                  f"{percent} of {2 * len(good)} printed percentages differ")


if __name__ == "__main__":
    main()
