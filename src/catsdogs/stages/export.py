"""Export stage: the trained model in the formats other tools read, each checked before it is written.

Writes one folder (the registered artifact, dvc.yaml's `artifacts:`): the plain-Keras file, a TensorFlow
SavedModel for TF Serving and an ONNX file, both taking a batch of uint8 images at the trained size and
returning class probabilities, and `metadata.json` (catsdogs.serving.exports.describe). Before anything is written,
each export runs on the validation images and is compared with the Keras model: the largest probability
difference per format goes to the metrics file, and one above `export.tolerance` stops the stage with
nothing written. A format whose packages are missing is skipped with a one-line note naming the extra.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import warnings
from pathlib import Path

from catsdogs import atomic, backend, caches, classes, params
from catsdogs.data import imagecache, splits
from catsdogs.serving import exports
from catsdogs.entry import run_main
from catsdogs.errors import UserError

log = logging.getLogger("export")

# What shaped training, recorded in the metadata, and the stage's own section (export.backend among it: the
# model file holds stock layers, so any backend reads it, and SavedModel and ONNX need TensorFlow's).
PARAMS = params.TRAINING + ("export",)  # dvc.yaml's export params equal these


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="the train stage's split file")
    parser.add_argument("--out", type=Path, required=True, help="the export folder")
    parser.add_argument("--metrics", type=Path, required=True, help="each format's largest difference (JSON)")
    parser.add_argument("--image-cache", type=Path, help=caches.IMAGES_OPTION_HELP)
    args = parser.parse_args(argv)
    p = params.for_stage("export", PARAMS)
    atomic.remove_leftovers(args.out, args.metrics)
    formats = [fmt for fmt in p.export.formats if available(fmt)]
    backend.select(p.export.backend)
    from catsdogs.training import model as model_lib

    model = model_lib.load(args.model)
    class_names = model_lib.load_classes(args.classes, model)
    data = splits.read_unchanged(args.data, args.split, class_names)
    size = model.input_shape[1:3]
    val = imagecache.load(args.data, data.paths, size, args.image_cache, p.data.cache_mode, data.digests)[data.val]
    expected = classes.probabilities(model.predict(val, batch_size=p.data.batch_size, verbose=0))

    differences = {}
    with atomic.atomic_dir(args.out) as tmp:
        shutil.copyfile(args.model, tmp / exports.FILES["keras"])
        serving = model_lib.with_probabilities(model)
        for fmt in formats:
            write(serving, fmt, tmp / exports.FILES[fmt])
            runner = exports.load(tmp / exports.FILES[fmt])
            differences[fmt] = float(abs(runner.probabilities(val) - expected).max())
            log.info("%s: largest probability difference from the Keras model on %d validation images: %.2e",
                     fmt, len(val), differences[fmt])
            if differences[fmt] > p.export.tolerance:
                raise UserError(f"{args.out / exports.FILES[fmt]}: its probabilities differ from the Keras model's "
                                f"by up to {differences[fmt]:.2e} on the validation images, more than "
                                f"export.tolerance ({p.export.tolerance:g}): nothing written")
        checked = {"validation_images": len(val), "tolerance": p.export.tolerance,
                   "largest_difference": differences}
        trained_on = {
            "params": p.values(params.TRAINING),
            "data": {"split_sha256": hashlib.sha256(args.split.read_bytes()).hexdigest(),
                     "train_images": len(data.train), "validation_images": len(data.val)},
        }
        atomic.write_json(tmp / exports.METADATA_FILE,
                          exports.describe(class_names, size, ["keras", *formats], trained_on, checked))
    atomic.write_json(args.metrics, {"validation_images": len(val), "largest_difference": differences,
                                     "skipped": [fmt for fmt in p.export.formats if fmt not in formats]})
    log.info("exported %s to %s", ", ".join(["keras", *formats]), args.out)


def available(fmt: str) -> bool:
    """Whether `fmt` can be written and checked here; a one-line note naming the extra if not."""
    missing = exports.missing_for_export(fmt)
    if missing:
        log.warning("export: %s skipped: it needs %s (%s)", fmt, ", ".join(missing), exports.EXPORT_EXTRA)
    return not missing


def write(serving, fmt: str, path: Path) -> None:
    """Keras' own export of `serving` (uint8 images in, probabilities out) as `fmt`, on TensorFlow's backend
    (params.Export allows formats with no other)."""
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
        serving.export(str(path), format={"savedmodel": "tf_saved_model", "onnx": "onnx"}[fmt], verbose=False)


if __name__ == "__main__":
    main()
