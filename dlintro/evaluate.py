"""Test-set metrics: accuracy, loss, per-class accuracy, and the confusion matrix (the scores
themselves: dlintro.scores); evaluating a run on its test set (`dlintro eval RUN`) or on
another image folder (`dlintro eval RUN --data PATH`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlintro import scores
from dlintro.errors import UserError


def predict(
    model: keras.Model, dataset: tf.data.Dataset, step: Any = None, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and true labels for every example of `dataset`.

    `step` is a compiled `x -> model(x, training=False)` to reuse across calls (validation at
    every epoch end), so that it is traced once. `tta` (a run's eval.tta) averages the model
    over test-time views (dlintro.tta.wrap; `step` is then not used).
    """
    if tta != "none":
        from dlintro import tta as views

        model, step = views.wrap(model, tta), None
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
    data_dir = data.data_root(data_dir, runs.recorded_data_root(spec.run_dir))
    test, info, _ = data.build_test(spec.config.data, spec.normalization, data_dir)
    probs, labels = predict(model, test, tta=spec.config.eval.tta)
    result = metrics(probs, labels, list(info.class_names))
    runs.write_json(spec.run_dir / "metrics.json", result)
    meta = runs.read_meta(spec.run_dir)
    report.write(
        spec.run_dir, result, probs, labels, test, spec.normalization, meta, info.test_files
    )
    return result


def folder_name(path: str | Path) -> str:
    """The name of `eval --data PATH`'s report folder: report-<folder> ('photos-test' for
    photos/test), made of letters, digits, '.', '_' and '-' only."""
    folder = Path(path).expanduser().resolve()
    parts = (
        folder.parts[-2:]
        if folder.name in ("test", "train", "val", "validation")
        else (folder.name,)
    )
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("._") or "data"
    return f"report-{name}"


def report_path(run_dir: str | Path, data: str | Path | None = None) -> Path:
    """index.html of the report `dlintro eval RUN [--data PATH]` writes."""
    folder = "report" if data is None else folder_name(data)
    return Path(run_dir) / folder / "index.html"


def evaluate_folder(run_dir: str | Path, data: str | Path) -> dict[str, Any]:
    """Evaluate a run's final model on an image folder (`dlintro eval RUN --data PATH`): its
    class folders (or its test/ split) decoded and resized to the run's input, normalized the
    run's way. Writes RUN/report-<folder>/ (report and metrics.json); the run's own
    metrics.json and report/ stay as they are. The metrics name the folder and the skipped
    files (on_error as the run's image_folder params say, else fail)."""
    from dlintro import report, runs
    from dlintro.data.folders import load_eval_folder
    from dlintro.data.pipeline import eval_batch_size, make_dataset

    spec = runs.run_spec(run_dir)
    h, w, c = spec.input_shape
    if c not in (1, 3):
        raise UserError(f"{run_dir}: --data needs a run on 1- or 3-channel images; it has {c}")
    params = spec.config.data.params if spec.config.data.dataset == "image_folder" else {}
    on_error = str(params.get("on_error", "fail"))
    info, x, y = load_eval_folder(str(data), spec.class_names, (h, w), c, on_error)
    model = runs.load_model(runs.model_path(spec.run_dir))
    test = make_dataset(x, y, eval_batch_size(spec.batch_size, x.shape[1:]), spec.normalization)
    probs, labels = predict(model, test)
    result = metrics(probs, labels, list(spec.class_names))
    result["data"] = info.root
    result.update(info.skipped_record())
    out = report_path(spec.run_dir, data).parent
    meta = runs.read_meta(spec.run_dir)
    meta = {**meta, "data": {**(meta.get("data") or {}), "dataset": f"image_folder {info.root}"}}
    report.write(
        spec.run_dir, result, probs, labels, test, spec.normalization, meta, info.test_files, out
    )
    runs.write_json(out / "metrics.json", result)
    return result
