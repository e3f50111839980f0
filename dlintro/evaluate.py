"""Test-set metrics: accuracy, loss, per-class accuracy, and the confusion matrix."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


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
    """All metrics from predicted probabilities."""
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(num_classes), where=support > 0)
    return {
        **loss_and_accuracy(probs, labels),
        "num_examples": len(labels),
        "class_names": list(class_names),
        "per_class_accuracy": [round(float(a), 6) for a in per_class],
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(model: keras.Model, dataset: tf.data.Dataset, class_names: list[str]) -> dict:
    """Metrics of `model` on `dataset` (normally the test set)."""
    probs, labels = predict(model, dataset)
    return metrics(probs, labels, class_names)


def evaluate_run(run_dir: Any, data_dir: Any = None) -> dict[str, Any]:
    """Evaluate a run's final model on its test set, with the run's own preprocessing, and
    refresh the run's metrics.json and its report/ (see dlintro.report)."""
    from dlintro import config, data, runs

    path = runs.open_run(run_dir)
    cfg = config.load(path / "config.yaml")
    meta = runs.read_meta(path)
    model = load_model(runs.model_path(path))
    normalization = meta.get("data", {}).get("normalization") or {"mode": cfg.data.normalize}
    test, info, _ = data.build_test(cfg.data, normalization, data_dir)
    probs, labels = predict(model, test)
    result = metrics(probs, labels, list(info.class_names))
    runs.write_json(path / "metrics.json", result)
    from dlintro import report

    report.write(path, result, probs, labels, test, normalization, meta)
    return result


def load_model(path: Any) -> keras.Model:
    """Load a .keras file in safe mode (no arbitrary code); a bad file is the user's error."""
    from dlintro import schedules  # noqa: F401  (registers the custom schedules)
    from dlintro.errors import UserError

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        msg = " ".join(str(exc).split())
        if "safe_mode" in msg or "arbitrary code" in msg:
            msg = (
                "it asks to run arbitrary Python code (such as a Lambda layer), which Keras "
                "safe_mode refuses; only load models you made with dlintro"
            )
        raise UserError(f"{path}: not a loadable Keras model: {msg[:200]}") from None
