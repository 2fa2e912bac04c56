"""Evaluate stage: the trained model on the validation subset, as metrics and per-image predictions.

Loads the model with safe_mode=True and scores exactly the validation files the train stage held out,
as its split file lists them, after checking that none of the images changed since. Writes summary
metrics for `dvc metrics` (per class and macro-averaged too), and per-image predictions and the ROC curve for
`dvc plots`: for more than two classes, the mean of the one-vs-rest curves, without thresholds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from catsdogs import atomic, backend, caches, classes, params, tables
from catsdogs.data import imagecache, splits
from catsdogs.evaluation import metrics
from catsdogs.entry import run_main

log = logging.getLogger("evaluate")

PARAMS = ("data.batch_size", "data.cache_mode", "train.backend")  # dvc.yaml's evaluate params equal these


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="the train stage's split file")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True, help="per-image CSV")
    parser.add_argument("--roc", type=Path, required=True, help="ROC curve CSV (for more than two classes, "
                        "the macro average of the one-vs-rest curves)")
    parser.add_argument("--image-cache", type=Path, help=caches.IMAGES_OPTION_HELP)
    args = parser.parse_args(argv)
    p = params.for_stage("evaluate", PARAMS)
    backend.select(p.train.backend)
    from catsdogs.training import batches
    from catsdogs.training import model as model_lib

    model = model_lib.load(args.model)
    class_names = model_lib.load_classes(args.classes, model)
    data = splits.read_unchanged(args.data, args.split, class_names)
    image_size = model.input_shape[1:3]
    array = imagecache.load(args.data, data.paths, image_size, args.image_cache, p.data.cache_mode,
                            data.digests)
    # in order, so no seed draws anything: the scores depend on the model and the images alone
    val = batches.Batches(array, data.labels, data.val, p.data.batch_size, shuffle=False, seed=0)

    probs = classes.probabilities(model.predict(val, verbose=2))
    labels = data.labels[data.val]
    summary = metrics.classification(labels, probs, class_names)

    predicted = probs.argmax(axis=1)
    binary = len(class_names) == 2
    atomic.write_csv(args.predictions, tables.PREDICTIONS, (
        [data.paths[i], class_names[y], class_names[k], f"{probs[n, k]:.6f}", f"{probs[n, classes.POSITIVE]:.6f}" if binary else ""]
        for n, (i, y, k) in enumerate(zip(data.val, labels, predicted))
    ))
    if binary:
        fpr, tpr, thresholds = metrics.roc_curve(labels == classes.POSITIVE, probs[:, classes.POSITIVE])
        curve = ([f"{a:.6f}", f"{b:.6f}", f"{min(t, 1.0):.6f}"] for a, b, t in zip(fpr, tpr, thresholds))
    else:  # the macro average of the one-vs-rest curves: no one threshold gives a point of it
        fpr, tpr = metrics.macro_roc_curve(labels, probs)
        curve = ([f"{a:.6f}", f"{b:.6f}", ""] for a, b in zip(fpr, tpr))
    atomic.write_csv(args.roc, tables.ROC, curve)
    atomic.write_json(args.metrics, summary)
    log.info("validation: %d images, accuracy %.4f, loss %.4f, ROC AUC %.4f, F1 %.4f",
             summary["images"], summary["accuracy"], summary["loss"], summary["roc_auc"], summary["f1"])


if __name__ == "__main__":
    main()
