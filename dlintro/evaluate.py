"""Test-set metrics: accuracy, loss, per-class accuracy, and the confusion matrix (the scores
themselves: dlintro.scores)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlintro import scores


def predict(
    model: keras.Model, dataset: tf.data.Dataset, step: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and true labels for every example of `dataset`.

    `step` is a compiled `x -> model(x, training=False)` to reuse across calls (validation at
    every epoch end), so that it is traced once.
    """
    step = step or tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    probs, labels = [], []
    for x, y in dataset:
        probs.append(step(x).numpy())
        labels.append(y.numpy())
    return np.concatenate(probs).astype(np.float64), np.concatenate(labels).astype(np.int64)


def loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy (clipped at 1e-7, as Keras does) and accuracy."""
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
    }


def metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """All metrics from predicted probabilities (what metrics.json holds)."""
    confusion = scores.confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    return {
        **loss_and_accuracy(probs, labels),
        "num_examples": len(labels),
        "class_names": list(class_names),
        "per_class_accuracy": scores.per_class_accuracy(confusion),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_run(run_dir: Any, data_dir: Any = None) -> dict[str, Any]:
    """Evaluate a run's final model on its test set, with the run's own preprocessing, and
    refresh the run's metrics.json and its report/ (see dlintro.report)."""
    from dlintro import data, report, runs

    spec = runs.run_spec(run_dir)
    model = runs.load_model(runs.model_path(spec.run_dir))
    test, info, _ = data.build_test(spec.config.data, spec.normalization, data_dir)
    probs, labels = predict(model, test)
    result = metrics(probs, labels, list(info.class_names))
    runs.write_json(spec.run_dir / "metrics.json", result)
    meta = runs.read_meta(spec.run_dir)
    report.write(spec.run_dir, result, probs, labels, test, spec.normalization, meta)
    return result
