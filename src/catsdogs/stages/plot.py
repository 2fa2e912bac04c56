"""Plot stage: the tutorial's figures and the evaluation's, as PNGs in one folder.

Draws a sample of training images and augmented versions of one of them (the tutorial's two figures), the
training curves, the confusion matrix, the ROC curve, the most confidently wrong validation images and the
model's architecture (catsdogs.evaluation.figures draws them). Every figure is drawn before the first is written.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from catsdogs import backend, history, params, tables
from catsdogs.data import images, splits
from catsdogs.evaluation import figures
from catsdogs.entry import run_main
from catsdogs.errors import UserError

log = logging.getLogger("plot")

PARAMS = ("seed", "train.augment", "train.backend")  # dvc.yaml's plot params equal these


def require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} not found: run the {stage} stage first")
    return path


def read_csv(path: Path, stage: str, columns) -> list[dict]:
    return tables.read(require(path, stage), columns, f"rerun the {stage} stage")


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--live", type=Path, required=True, help="the train stage's DVCLive folder")
    parser.add_argument("--predictions", type=Path, required=True, help="per-image CSV of the evaluate stage")
    parser.add_argument("--roc", type=Path, required=True, help="ROC curve CSV of the evaluate stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True, help="class names, in label order (JSON)")
    parser.add_argument("--split", type=Path, required=True, help="the train stage's split file")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    p = params.for_stage("plot", PARAMS)
    backend.select(p.train.backend)
    from catsdogs.training import model as model_lib

    require(args.data, "filter")
    train_log = history.read_history(args.live)
    predictions = read_csv(args.predictions, "evaluate", tables.PREDICTIONS)
    curve = read_csv(args.roc, "evaluate", tables.ROC)
    model = model_lib.load(args.model)
    class_names = model_lib.load_classes(args.classes, model)
    data, digests = splits.read(args.split, class_names)
    out, size = args.out, tuple(model.input_shape[1:3])  # the model is the truth after training
    digest = dict(zip(data.paths, digests))

    def picture(path: str) -> np.ndarray:
        """An image the split file lists, checked against its hash, decoded."""
        if path not in digest:
            raise UserError(f"{path}: named in {args.predictions} but not in {args.split}: rerun the evaluate stage")
        splits.verify(args.data, [path], [digest[path]], args.split)
        return images.decode_file(args.data / path, size)

    sample = figures.training_sample(data, p.seed)
    pictures = [picture(data.paths[i]) for i in sample]
    # every figure is drawn before the first is written: a bad input leaves no partial set of PNGs
    drawn = {
        "train_images": figures.image_grid(pictures, [class_names[data.labels[i]] for i in sample]),
        "augmented": figures.augmented(pictures[0], p.train.augment, p.seed),
        "training_curves": figures.training_curves(train_log),
        "confusion_matrix": figures.confusion_matrix(predictions, class_names),
        "roc": figures.roc(curve, predictions, class_names),
        "most_wrong": figures.most_wrong(predictions, picture),
    }
    for name, fig in drawn.items():
        figures.save(fig, out / f"{name}.png")

    if not figures.architecture_diagram(model, out / "architecture.png"):
        figures.save(figures.model_summary(model), out / "architecture.png")


if __name__ == "__main__":
    main()
