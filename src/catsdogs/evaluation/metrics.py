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


def classification(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, precision, recall, F1 (of classes.POSITIVE for two classes, macro-averaged for more), ROC AUC,
    the image count and per-class accuracy."""
    predicted = probs.argmax(axis=1)
    num_classes = len(class_names)
    precision, recall, f1, auc = [], [], [], []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (labels == c))
        precision.append(tp / max(np.sum(predicted == c), 1))
        recall.append(tp / max(np.sum(labels == c), 1))
        f1.append(2 * precision[-1] * recall[-1] / max(precision[-1] + recall[-1], 1e-12))
        auc.append(roc_auc(labels == c, probs[:, c]))
    pick = (lambda values: values[classes.POSITIVE]) if num_classes == 2 else (lambda values: float(np.nanmean(values)))
    return {
        "accuracy": round(float(np.mean(predicted == labels)), 6),
        "precision": round(float(pick(precision)), 6),
        "recall": round(float(pick(recall)), 6),
        "f1": round(float(pick(f1)), 6),
        "roc_auc": round(float(pick(auc)), 6),
        "images": int(len(labels)),
        "per_class_accuracy": {name: round(float(recall[c]), 6) for c, name in enumerate(class_names)},
    }
