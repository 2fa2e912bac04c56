"""The classes of a model: their names as the train stage saves them, and how the model's outputs map to them.

The one owner of two rules every stage and runtime relies on: a two-class model has a single logit (the
tutorial's sigmoid output), and for two classes, class 1 (the second name in label order) is the
positive one (POSITIVE): its probability is the score of the ROC curve, the `positive_probability` of
metrics/predictions.csv, and what precision, recall and F1 are of.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from catsdogs.errors import UserError

POSITIVE = 1  # the label whose probability is the two-class score (ROC, precision, recall)


def outputs_for(num_classes: int) -> int:
    """The model's number of logits: one for two classes (the tutorial's sigmoid), else one per class."""
    return 1 if num_classes == 2 else num_classes


def count(outputs: int) -> int:
    """The number of classes a model with `outputs` logits tells apart."""
    return 2 if outputs == 1 else outputs


def probabilities(logits) -> np.ndarray:
    """Class probabilities (N, num_classes) from the model's logits (one column means two classes)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def read(path) -> object:
    """What the train stage's class-names file holds (a JSON list of names, in label order, unchecked)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: class names not found (the train stage writes them beside the model)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable class names ({exc})") from None


def read_checked(path, num_classes: int, model_path) -> list[str]:
    """The class names the train stage saved, checked against the model's number of classes."""
    names = read(path)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) >= 2
            and len(names) == num_classes):
        raise UserError(f"{path}: {names!r} does not match the {num_classes} classes of {model_path}")
    return names
