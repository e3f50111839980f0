"""The evaluation report of a run (`dlintro eval` writes RUN_DIR/report/), and the figures it
shares with TensorBoard (confusion matrix, misclassified images, learning curves).

    report/
      index.html               ties everything together; opens offline (relative links, no JS)
      report.json              summary, per-class scores, most-confused pairs, the gallery
      confusion_matrix.json    rows: true class, columns: predicted class
      confusion_matrix.png
      per_class.json           precision, recall, F1, accuracy and support of every class
      worst_misclassified.png  the gallery as one figure
      gallery/NNN.png          each misclassified image, enlarged
      learning_curves.png      loss, accuracy and learning rate per epoch (from history.csv)

Per-class accuracy is the share of that class's test images classified correctly (equal to its
recall), as `dlintro eval` reports it. Images are shown de-normalized with the run's own
normalization (meta.json), i.e. as the model's input pixels. Figures are drawn with matplotlib's
Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

GALLERY_SIZE = 24  # worst misclassified images kept in the report
TOP_PAIRS = 10
CELL_PIXELS = 96  # gallery images are enlarged (nearest neighbour) to at least this height


# --------------------------------------------------------------------------- numbers


def class_scores(confusion: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1, accuracy (= recall) and support per class from a confusion matrix
    (rows: true class, columns: predicted). A score with an empty denominator is 0."""
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


# --------------------------------------------------------------------------- images


def gather(dataset: Any, indices: np.ndarray) -> np.ndarray:
    """The input images of a (finite, unshuffled) dataset at `indices`, in that order."""
    if not len(indices):
        return np.zeros((0, 1, 1, 1), np.float32)
    wanted = {int(i): n for n, i in enumerate(indices)}
    out: list[Any] = [None] * len(indices)
    start = 0
    for x, _ in dataset:
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        for i in range(start, start + len(x)):
            if i in wanted:
                out[wanted[i]] = x[i - start]
        start += len(x)
        if start > max(wanted):
            break
    return np.stack(out)


def denormalize(x: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Model inputs [N,H,W,C] back to uint8 pixels: x * std + mean, divided by the scale."""
    mean = np.asarray(normalization.get("mean", [0.0]), np.float64)
    std = np.asarray(normalization.get("std", [1.0]), np.float64)
    scale = 1.0 if normalization.get("mode") == "none" else 1.0 / 255.0
    pixels = (np.asarray(x, np.float64) * std + mean) / scale
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def displayable(images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,C] -> [N,H,W,1] (grey) or [N,H,W,3]: 2 channels show the first, 4 the first
    three."""
    c = images.shape[-1]
    if c in (1, 3):
        return images
    return images[..., :1] if c == 2 else images[..., :3]


def enlarge(image: np.ndarray, height: int = CELL_PIXELS) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor so the image is at least `height`."""
    f = max(1, math.ceil(height / image.shape[0]))
    return np.repeat(np.repeat(image, f, axis=0), f, axis=1)


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def confusion_png(confusion: np.ndarray, class_names: list[str]) -> bytes:
    """The confusion matrix as a PNG: colour = share of the true class, counts written in."""
    confusion = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    side = min(4.0 + 0.45 * n, 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    labels = [_short(s) for s in class_names]
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90 if n > 10 else 0, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if confusion[t, p]:
                    color = "white" if shares[t, p] > 0.5 else "black"
                    text = str(confusion[t, p])
                    ax.text(p, t, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = max(int(confusion.sum()), 1)
    ax.set_title(f"confusion matrix: accuracy {np.trace(confusion) / total:.2%} of {total:,}")
    return _png(fig)


def gallery_png(images: np.ndarray, titles: list[str], cols: int = 6) -> bytes:
    """uint8 images [N,H,W,1|3] with one title each, as one PNG grid."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig = _figure(1.9 * cols, 2.1 * rows)
    for k in range(len(images)):
        ax = fig.add_subplot(rows, cols, k + 1)
        img = images[k]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(titles[k], fontsize=8)
        ax.axis("off")
    if not len(images):
        fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    return _png(fig)


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv as numbers (NaN for empty or missing values); [] when there is none."""
    if not path.is_file():
        return []
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.append({k: _float(v) for k, v in row.items() if k})
    return rows


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def curves_png(history: list[dict[str, float]]) -> bytes:
    """Loss, accuracy and learning rate per epoch, training and validation."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(12.0, 3.6)
    epochs = [r.get("epoch", math.nan) for r in history]
    panels = [("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate")]
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        train = [r.get(key, math.nan) for r in history]
        ax.plot(epochs, train, marker="o", markersize=3, label="training")
        val = [r.get(f"val_{key}", math.nan) for r in history]
        if any(v == v for v in val):
            ax.plot(epochs, val, marker="o", markersize=3, label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key != "learning_rate":
            ax.legend(fontsize=8)
        if key == "learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return _png(fig)


def _short(name: str, n: int = 14) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def caption(class_names: list[str], true: int, predicted: int, p: float) -> str:
    return f"true {_short(class_names[true])}\npred {_short(class_names[predicted])} {p:.0%}"


# --------------------------------------------------------------------------- the report


def write(
    run_dir: str | Path,
    metrics: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    dataset: Any,
    normalization: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write RUN_DIR/report/ from the test predictions; return its path.

    `metrics` is what evaluate.metrics returned for these predictions (its accuracy is the
    report's); `dataset` is the test pipeline the predictions came from, in the same order.
    The report is built in a temporary directory and then swapped in whole.
    """
    from dlintro.data.preview import write_png

    run_dir = Path(run_dir)
    meta = meta or {}
    names = list(metrics["class_names"])
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    scores = class_scores(confusion, names)
    pairs = confused_pairs(confusion, names)
    worst = worst_misclassified(probs, labels, GALLERY_SIZE)
    images = displayable(denormalize(gather(dataset, worst), normalization))
    gallery = []
    for rank, i in enumerate(worst):
        top = np.argsort(-probs[i], kind="stable")[:3]
        gallery.append({
            "rank": rank + 1, "index": int(i), "file": f"gallery/{rank + 1:03d}.png",
            "true": int(labels[i]), "true_name": names[labels[i]],
            "predicted": int(top[0]), "predicted_name": names[top[0]],
            "probability_true": round(float(probs[i, labels[i]]), 6),
            "top": [{"class": int(c), "name": names[c], "probability": round(float(probs[i, c]), 6)}
                    for c in top],
        })  # fmt: skip
    history = read_history(run_dir / "history.csv")
    summary = {
        "run": run_dir.name,
        "model": (meta.get("model") or {}).get("name"),
        "dataset": (meta.get("data") or {}).get("dataset"),
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "num_examples": metrics["num_examples"],
        "num_misclassified": int((probs.argmax(axis=1) != labels).sum()),
        "macro_precision": _mean(s["precision"] for s in scores),
        "macro_recall": _mean(s["recall"] for s in scores),
        "macro_f1": _mean(s["f1"] for s in scores),
    }
    report = {"summary": summary, "per_class": scores, "confused_pairs": pairs, "gallery": gallery}

    tmp = Path(tempfile.mkdtemp(prefix=".report.", dir=run_dir))
    try:
        (tmp / "gallery").mkdir()
        _write_json(tmp / "report.json", report)
        _write_json(tmp / "per_class.json", scores)
        _write_json(tmp / "confusion_matrix.json", {
            "class_names": names, "rows": "true class", "columns": "predicted class",
            "matrix": confusion.tolist(),
        })  # fmt: skip
        (tmp / "confusion_matrix.png").write_bytes(confusion_png(confusion, names))
        titles = [
            caption(names, g["true"], g["predicted"], g["top"][0]["probability"]) for g in gallery
        ]
        (tmp / "worst_misclassified.png").write_bytes(gallery_png(images, titles))
        for g, img in zip(gallery, images, strict=True):
            write_png(tmp / g["file"], enlarge(img))
        if history:
            (tmp / "learning_curves.png").write_bytes(curves_png(history))
        (tmp / "index.html").write_text(
            _html(summary, scores, pairs, gallery, bool(history)),
            encoding="utf-8",
        )
        os.chmod(tmp, 0o755)
        _swap(tmp, run_dir / "report")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / "report"


def _mean(values: Any) -> float:
    values = list(values)
    return round(sum(values) / len(values), 6) if values else 0.0


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _swap(new: Path, target: Path) -> None:
    """Put directory `new` in place of `target` (an old report is removed)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.2em 0.7em; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.big { font-size: 1.3em; font-weight: bold; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 11em; font-size: 0.8em; }
figure img { width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
.bar { background: #4a7ebb; height: 0.6em; display: inline-block; vertical-align: middle; }
.true .bar { background: #3a3; }
nav a { margin-right: 1em; }
img.figure { max-width: 100%; }
"""


def _html(
    summary: dict[str, Any],
    scores: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    gallery: list[dict[str, Any]],
    has_history: bool,
) -> str:
    e = html.escape
    run = e(str(summary["run"]))
    what = " on ".join(e(str(v)) for v in (summary["model"], summary["dataset"]) if v)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evaluation report: {run}</title><style>{_CSS}</style></head><body>",
        f"<h1>Evaluation report: {run}</h1>",
        f"<p>{what}</p>" if what else "",
        f'<p><span class="big">test accuracy {summary["accuracy"]:.2%}</span> '
        f"&nbsp; loss {summary['loss']:.4f} &nbsp; {summary['num_examples']:,} test images, "
        f"{summary['num_misclassified']:,} misclassified &nbsp; macro F1 "
        f"{summary['macro_f1']:.3f}</p>",
        '<nav><a href="#confusion">confusion matrix</a><a href="#classes">per class</a>'
        '<a href="#pairs">most confused</a><a href="#gallery">worst mistakes</a>'
        + ('<a href="#curves">learning curves</a>' if has_history else "")
        + '<a href="report.json">report.json</a></nav>',
        '<h2 id="confusion">Confusion matrix</h2>',
        "<p>Rows: true class; columns: predicted class; colour: share of the true class. "
        '(<a href="confusion_matrix.json">confusion_matrix.json</a>)</p>',
        '<img class="figure" src="confusion_matrix.png" alt="confusion matrix">',
        '<h2 id="classes">Per class</h2>',
        "<p>Precision: of the images predicted as the class, the share that are. Recall: of the "
        "class's images, the share found. Accuracy: the share of the class's images classified "
        "correctly (equal to recall; what <code>dlintro eval</code> shows). "
        '(<a href="per_class.json">per_class.json</a>)</p>',
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        "<th>accuracy</th><th>images</th><th>predicted</th></tr>",
    ]
    for s in scores:
        parts.append(
            f"<tr><td>{s['class']} {e(s['name']) if s['name'] != str(s['class']) else ''}</td>"
            f"<td>{s['precision']:.3f}</td><td>{s['recall']:.3f}</td><td>{s['f1']:.3f}</td>"
            f"<td>{s['accuracy']:.2%}</td><td>{s['support']:,}</td><td>{s['predicted']:,}</td>"
            "</tr>"
        )
    parts.append("</table>")
    parts.append('<h2 id="pairs">Most confused pairs</h2>')
    if pairs:
        parts.append(
            "<table><tr><th>true class</th><th>predicted as</th><th>images</th>"
            "<th>share of the true class</th></tr>"
        )
        for p in pairs:
            parts.append(
                f"<tr><td>{e(p['true_name'])}</td><td>{e(p['predicted_name'])}</td>"
                f"<td>{p['count']:,}</td><td>{p['share_of_true']:.2%}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No test image was misclassified.</p>")
    parts.append('<h2 id="gallery">Worst misclassified images</h2>')
    if gallery:
        parts.append(
            f"<p>The {len(gallery)} misclassified test images with the lowest probability "
            "for their true class, with the model's top three classes. "
            '(<a href="worst_misclassified.png">as one image</a>)</p><div class="gallery">'
        )
        for g in gallery:
            rows = []
            for t in g["top"]:
                cls = ' class="true"' if t["class"] == g["true"] else ""
                width = max(t["probability"] * 6.0, 0.05)
                rows.append(
                    f"<div{cls}>{e(_short(t['name']))} {t['probability']:.1%} "
                    f'<span class="bar" style="width:{width:.2f}em"></span></div>'
                )
            parts.append(
                f'<figure><img src="{g["file"]}" alt="test image {g["index"]}">'
                f"<figcaption>#{g['index']}: true <b>{e(g['true_name'])}</b> "
                f"({g['probability_true']:.1%}), predicted <b>{e(g['predicted_name'])}</b>"
                f"{''.join(rows)}</figcaption></figure>"
            )
        parts.append("</div>")
    else:
        parts.append("<p>No test image was misclassified.</p>")
    if has_history:
        parts.append('<h2 id="curves">Learning curves</h2><p>From history.csv, per epoch.</p>')
        parts.append('<img class="figure" src="learning_curves.png" alt="learning curves">')
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"
