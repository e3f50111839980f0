"""Classification scores from test predictions: the confusion matrix, per-class precision,
recall, F1 and accuracy, the most-confused pairs and the worst mistakes.

One implementation for `dlintro eval` (metrics.json's per_class_accuracy), the report and
TensorBoard. NumPy only. Per-class accuracy is the share of that class's test images classified
correctly, i.e. its recall; a score with an empty denominator is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TOP_PAIRS = 10


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] (int64)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def class_scores(confusion: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1, accuracy (= recall) and support per class from a confusion matrix
    (rows: true class, columns: predicted), rounded to 6 decimals."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    out = []
    for i, name in enumerate(class_names):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / support[i] if support[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out.append({
            "class": i, "name": name, "precision": round(float(p), 6),
            "recall": round(float(r), 6), "f1": round(float(f1), 6),
            "accuracy": round(float(r), 6), "support": int(support[i]),
            "predicted": int(predicted[i]),
        })  # fmt: skip
    return out


def per_class_accuracy(confusion: np.ndarray) -> list[float]:
    """The accuracy of each class (its recall), as class_scores computes it."""
    names = [str(i) for i in range(len(confusion))]
    return [s["accuracy"] for s in class_scores(confusion, names)]


def confused_pairs(
    confusion: np.ndarray, class_names: list[str], top: int = TOP_PAIRS
) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count, share of true)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")
    support = confusion.sum(axis=1)
    pairs = []
    for flat in order[:top]:
        t, p = divmod(int(flat), confusion.shape[1])
        if off[t, p] == 0:
            break
        pairs.append({
            "true": t, "true_name": class_names[t], "predicted": p,
            "predicted_name": class_names[p], "count": int(off[t, p]),
            "share_of_true": round(float(off[t, p] / support[t]), 6),
        })  # fmt: skip
    return pairs


def worst_misclassified(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k misclassified examples, lowest probability of the true class first
    (the model's most confident mistakes); ties keep dataset order."""
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    true_p = probs[wrong, labels[wrong]]
    return wrong[np.argsort(true_p, kind="stable")[:k]]
