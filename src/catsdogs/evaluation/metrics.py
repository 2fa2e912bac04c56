"""Classification metrics from labels and probabilities, in numpy: no extra dependency for a few formulas."""

from __future__ import annotations

import numpy as np

from catsdogs import classes


def roc_curve(positive: np.ndarray, score: np.ndarray):
    """(fpr, tpr, thresholds) over every distinct score, highest first, starting at (0, 0)."""
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order].astype(bool)
    distinct = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(positive)[distinct]
    fp = (distinct + 1) - tp
    n_pos, n_neg = max(positive.sum(), 1), max((~positive).sum(), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, score[distinct]]


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), or NaN when a class is absent."""
    positive = positive.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = np.empty(len(score))
    order = np.argsort(score, kind="stable")
    sorted_scores = score[order]
    ranks[order] = np.arange(1, len(score) + 1)
    # average the ranks of tied scores
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for s, c in zip(start[counts > 1], counts[counts > 1]):
        ranks[order[s : s + c]] = s + (c + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The area under a curve of points, by trapezoids (np.trapezoid needs numpy 2; pyproject allows 1.26)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _limits(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ROC curve's true positive rate just left and just right of each false positive rate of `grid` (they
    differ where the curve rises straight up)."""
    f, first = np.unique(fpr, return_index=True)
    bottom, top = tpr[first], tpr[np.r_[first[1:] - 1, len(fpr) - 1]]
    k = np.minimum(np.searchsorted(f, grid), len(f) - 1)
    on = f[k] == grid
    j = np.clip(k - 1, 0, len(f) - 2)  # off the curve's points, x lies between f[j] and f[j + 1]
    line = top[j] + (grid - f[j]) / (f[j + 1] - f[j]) * (bottom[j + 1] - top[j])
    return np.where(on, bottom[k], line), np.where(on, top[k], line)


def macro_roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr): the mean of the one-vs-rest ROC curves of the classes present both ways in `labels`. Its area
    is the mean of their AUCs, the macro ROC AUC of `classification`, exactly: every curve is piecewise linear
    and the grid holds every corner of each, both sides of a vertical step."""
    curves = [roc_curve(labels == c, probs[:, c])[:2] for c in range(probs.shape[1])
              if 0 < np.sum(labels == c) < len(labels)]
    grid = np.unique(np.concatenate([fpr for fpr, _ in curves]))
    left, right = (np.mean(side, axis=0) for side in zip(*(_limits(fpr, tpr, grid) for fpr, tpr in curves)))
    fpr, tpr = np.repeat(grid, 2), np.stack([left, right], axis=1).ravel()
    keep = np.r_[True, (np.diff(fpr) != 0) | (np.diff(tpr) != 0)]  # a point twice where nothing steps up
    return fpr[keep], tpr[keep]


def classification(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, precision, recall, F1 (of classes.POSITIVE for two classes, macro-averaged for more), ROC AUC,
    the image count, per-class accuracy (each class's recall) and the loss (the mean cross-entropy); then, for
    any number of classes, the macro averages (`macro`) and each class's precision, F1 and one-vs-rest ROC AUC. A macro average skips a class
    whose AUC is undefined (absent from the labels); that class's own AUC is null."""
    predicted = probs.argmax(axis=1)
    num_classes = len(class_names)
    precision, recall, f1, auc = [], [], [], []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (labels == c))
        precision.append(tp / max(np.sum(predicted == c), 1))
        recall.append(tp / max(np.sum(labels == c), 1))
        f1.append(2 * precision[-1] * recall[-1] / max(precision[-1] + recall[-1], 1e-12))
        auc.append(roc_auc(labels == c, probs[:, c]))
    macro = {"precision": precision, "recall": recall, "f1": f1, "roc_auc": auc}
    pick = (lambda values: values[classes.POSITIVE]) if num_classes == 2 else (lambda values: float(np.nanmean(values)))

    def per_class(values) -> dict:
        return {name: None if np.isnan(values[c]) else round(float(values[c]), 6) for c, name in enumerate(class_names)}

    true_prob = probs[np.arange(len(labels)), labels]

    return {
        "accuracy": round(float(np.mean(predicted == labels)), 6),
        "precision": round(float(pick(precision)), 6),
        "recall": round(float(pick(recall)), 6),
        "f1": round(float(pick(f1)), 6),
        "roc_auc": round(float(pick(auc)), 6),
        "images": int(len(labels)),
        "per_class_accuracy": per_class(recall),
        "loss": round(float(-np.mean(np.log(np.clip(true_prob, 1e-7, 1.0)))), 6),
        "macro": {key: round(float(np.nanmean(values)), 6) for key, values in macro.items()},
        "per_class_precision": per_class(precision),
        "per_class_f1": per_class(f1),
        "per_class_roc_auc": per_class(auc),
    }
