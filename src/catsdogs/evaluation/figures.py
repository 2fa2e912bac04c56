"""The plot stage's figures: the tutorial's two image grids, the training curves, the confusion matrix, the
ROC curve, the most confidently wrong validation images and the model's architecture.

Every random choice is seeded and matplotlib's files carry no version tag, so the same inputs give the same
PNGs, except architecture.png: Graphviz draws it where it is installed (its version decides the pixels), the
model summary otherwise. Keras is imported only inside the functions that need it, after the stage has chosen the backend.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from catsdogs import atomic, classes
from catsdogs.data import splits
from catsdogs.evaluation import metrics
from catsdogs.errors import UserError

if TYPE_CHECKING:
    import keras

log = logging.getLogger("plot")

GRID = 3  # the tutorial's 3x3 grids
TILT_ABOVE = 4  # with more classes, the confusion matrix's predicted-class names are tilted


def save(fig: Figure, path: Path) -> None:
    """Through a temporary file, so an interrupted stage leaves no truncated PNG; without matplotlib's
    version tag, so the bytes depend on the pixels alone."""
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    log.info("wrote %s", path)


def image_grid(pictures, titles=None, suptitle: str | None = None) -> Figure:
    """The tutorial's 3x3 grid of images, filled from the top left; rows left empty are not drawn."""
    rows = -(-len(pictures) // GRID)
    fig = Figure(figsize=(10, 10 * rows / GRID + (0.4 if suptitle else 0)), layout="constrained")
    for i, ax in enumerate(fig.subplots(rows, GRID, squeeze=False).flat):
        ax.axis("off")
        if i < len(pictures):
            ax.imshow(pictures[i])
            ax.set_title(titles[i] if titles else "")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def text_figure(text: str, monospace: bool = False) -> Figure:
    """A figure that says something in words, sized to the text (placeholders, the model summary)."""
    fig = Figure()
    label = fig.text(0.5, 0.5, text, ha="center", va="center", multialignment="left",
                     fontsize=9 if monospace else 14, family="monospace" if monospace else None)
    box = label.get_window_extent(FigureCanvasAgg(fig).get_renderer())  # pixels, centred: resizing keeps it so
    fig.set_size_inches(max(4.0, box.width / fig.dpi + 0.6), max(2.0, box.height / fig.dpi + 0.6))
    return fig


def training_sample(split: splits.Split, seed: int) -> np.ndarray:
    """Nine training images picked with the seed (the tutorial shows its first shuffled batch)."""
    return np.random.default_rng(seed).choice(split.train, size=min(GRID * GRID, len(split.train)), replace=False)


def augmented(picture: np.ndarray, augment_params, seed: int) -> Figure:
    """Nine copies through one call of the training augmentation: each copy draws its own flip and angle."""
    from catsdogs.training import augment

    transform = augment.on_cpu(augment_params.flip, augment_params.rotation, seed)
    pictures = transform(np.repeat(picture[None], GRID * GRID, axis=0))
    return image_grid(list(pictures), suptitle="Augmented versions of one training image")


def training_curves(rows: list[dict]) -> Figure:
    """Loss and accuracy per epoch (numbered from 1, as in the log), training and validation."""
    epochs = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, (key, name) in zip(fig.subplots(1, 2), [("loss", "loss"), ("acc", "accuracy")]):
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label="training")
        ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=name, title=name.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def label_indices(rows: list[dict], column: str, class_names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({r[column] for r in rows} - index.keys())
    if unknown:
        raise UserError(f"predictions name class(es) {', '.join(unknown)} that the image folder lacks "
                        f"({', '.join(class_names)}): rerun the evaluate stage")
    return np.asarray([index[r[column]] for r in rows], dtype=np.int64)


def confusion_matrix(predictions: list[dict], class_names: list[str]) -> Figure:
    """Rows are the actual classes, columns the predicted ones (scikit-learn's convention)."""
    n = len(class_names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (label_indices(predictions, "actual", class_names),
                       label_indices(predictions, "predicted", class_names)), 1)
    side = max(4.5, 1.2 * n + 2)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues", vmin=0)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > counts.max() / 2 else "black")
    tilted = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if n > TILT_ABOVE else {}
    ax.set_xticks(range(n), class_names, **tilted)  # tilted, ten names side by side stay apart
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="actual", title=f"Confusion matrix ({len(predictions)} validation images)")
    return fig


def roc(curve: list[dict], predictions: list[dict], class_names: list[str]) -> Figure:
    """For two classes the AUC comes from the positive class's probabilities with catsdogs.evaluation.metrics, so
    it is the number the evaluate stage reports. For more, the curve is the evaluate stage's mean of the
    one-vs-rest curves (predictions.csv holds no class's probability but the predicted one's): its area is the
    macro ROC AUC the evaluate stage reports, to the CSV's six decimals."""
    if not curve:
        return text_figure("No ROC curve: the ROC file has no rows")
    fpr, tpr = [float(r["fpr"]) for r in curve], [float(r["tpr"]) for r in curve]
    if len(class_names) == 2:
        positive = label_indices(predictions, "actual", class_names) == classes.POSITIVE
        auc = metrics.roc_auc(positive, np.asarray([float(r["positive_probability"]) for r in predictions]))
        title = f"ROC curve ({class_names[classes.POSITIVE]} as the positive class)"
    else:
        auc = metrics.area(np.asarray(fpr), np.asarray(tpr))
        title = f"ROC curve (mean of the {len(class_names)} one-vs-rest curves)"
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"model (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def most_wrong(predictions: list[dict], picture) -> Figure:
    """Sorted by the predicted class's probability, then path, so ties cannot reorder the grid between runs; `picture(path)` decodes
    one validation image."""
    wrong = [r for r in predictions if r["actual"] != r["predicted"]]
    if not wrong:
        return text_figure("No misclassified validation image")
    wrong = sorted(wrong, key=lambda r: (-float(r["probability"]), r["path"]))[: GRID * GRID]
    pictures = [picture(r["path"]) for r in wrong]
    titles = [f"{r['actual']} → {r['predicted']} ({float(r['probability']):.2f})" for r in wrong]
    return image_grid(pictures, titles, f"Most confidently wrong validation images ({len(wrong)} shown)")


def architecture_diagram(model: keras.Model, path: Path) -> bool:
    """Keras' diagram needs pydot and Graphviz' `dot`; without `dot` on PATH it is not even tried, and any
    failure (a missing pydot, a broken Graphviz) falls back on the summary rather than failing the stage."""
    if shutil.which("dot") is None:
        return False
    import keras

    try:
        with atomic.atomic_path(path, suffix=".png") as tmp:
            keras.utils.plot_model(model, to_file=str(tmp), show_shapes=True)
            if not tmp.stat().st_size:
                raise RuntimeError("plot_model wrote nothing")
    except Exception as exc:  # noqa: BLE001 - any failure means: draw the summary instead
        log.info("no Graphviz diagram (%s): drawing the model summary instead", exc)
        return False
    log.info("wrote %s", path)
    return True


def model_summary(model: keras.Model) -> Figure:
    """Keras sizes the table to the terminal and rich crops it at its console's width (80 columns off a
    terminal, cutting off "Connected to"): one fixed COLUMNS for both gives the whole table, in any shell."""
    lines: list[str] = []
    with mock.patch.dict(os.environ, {"COLUMNS": "140"}):
        model.summary(print_fn=lambda text, **_: lines.append(text))
    return text_figure("\n".join(lines).rstrip(), monospace=True)
