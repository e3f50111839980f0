"""The evaluation report of a run: `dlintro eval` writes RUN_DIR/report/ (its scores come from
dlintro.scores, its figures from dlintro.figures, shared with TensorBoard).

    report/
      index.html               ties everything together; opens offline (relative links, no JS)
      report.json              summary, per-class scores, most-confused pairs, the gallery
      confusion_matrix.json    rows: true class, columns: predicted class
      confusion_matrix.png
      per_class.json           precision, recall, F1, accuracy and support of every class
      worst_misclassified.png  the gallery as one figure
      gallery/NNN.png          each misclassified image, enlarged
      learning_curves.png      loss, accuracy, learning rate per epoch and per log step

Per-class accuracy is the share of that class's test images classified correctly (equal to its
recall), as `dlintro eval` reports it.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlintro import figures, runfiles, runs, scores
from dlintro.board.reader import step_history
from dlintro.data.normalization import invert
from dlintro.figures import GALLERY_SIZE

# --------------------------------------------------------------------------- history


# --------------------------------------------------------------------------- the report


def write(
    run_dir: str | Path,
    metrics: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    dataset: Any,
    normalization: dict[str, Any],
    meta: dict[str, Any] | None = None,
    files: tuple[str, ...] | list[str] = (),
    out: str | Path | None = None,
) -> Path:
    """Write RUN_DIR/report/ (or `out`) from the test predictions; return its path.

    `metrics` is what evaluate.metrics returned for these predictions (its accuracy is the
    report's); `dataset` is the test pipeline the predictions came from, in the same order.
    `files` names the test images in that order (image folders: paths relative to the dataset
    root), so that the gallery shows them instead of `#index`. The report is built in a
    temporary directory and then swapped in whole.
    """
    from dlintro.data.preview import write_png

    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / "report"
    meta = meta or {}
    names = list(metrics["class_names"])
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    per_class = scores.class_scores(confusion, names)
    pairs = scores.confused_pairs(confusion, names)
    worst = scores.worst_misclassified(probs, labels, GALLERY_SIZE)
    images = figures.displayable(invert(figures.gather(dataset, worst), normalization))
    gallery = []
    for rank, i in enumerate(worst):
        top = np.argsort(-probs[i], kind="stable")[:3]
        gallery.append({
            "rank": rank + 1, "index": int(i), "file": f"gallery/{rank + 1:03d}.png",
            "path": files[i] if len(files) == len(labels) else None,
            "true": int(labels[i]), "true_name": names[labels[i]],
            "predicted": int(top[0]), "predicted_name": names[top[0]],
            "probability_true": round(float(probs[i, labels[i]]), 6),
            "top": [{"class": int(c), "name": names[c], "probability": round(float(probs[i, c]), 6)}
                    for c in top],
        })  # fmt: skip
    history = runs.read_history(run_dir)
    summary = {
        "run": run_dir.name,
        "model": (meta.get("model") or {}).get("name"),
        "dataset": (meta.get("data") or {}).get("dataset"),
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "num_examples": metrics["num_examples"],
        "num_misclassified": int((probs.argmax(axis=1) != labels).sum()),
        "macro_precision": _mean(s["precision"] for s in per_class),
        "macro_recall": _mean(s["recall"] for s in per_class),
        "macro_f1": _mean(s["f1"] for s in per_class),
    }
    report = {
        "summary": summary,
        "per_class": per_class,
        "confused_pairs": pairs,
        "gallery": gallery,
    }

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / "gallery").mkdir()
        _write_json(tmp / "report.json", report)
        _write_json(tmp / "per_class.json", per_class)
        _write_json(tmp / "confusion_matrix.json", {
            "class_names": names, "rows": "true class", "columns": "predicted class",
            "matrix": confusion.tolist(),
        })  # fmt: skip
        (tmp / "confusion_matrix.png").write_bytes(figures.confusion_png(confusion, names))
        titles = [
            figures.caption(names, g["true"], g["predicted"], g["top"][0]["probability"])
            for g in gallery
        ]
        (tmp / "worst_misclassified.png").write_bytes(figures.gallery_png(images, titles))
        for g, img in zip(gallery, images, strict=True):
            write_png(tmp / g["file"], figures.enlarge(img))
        if history:
            steps = step_history(run_dir)  # the progress lines' loss, from the logs
            (tmp / "learning_curves.png").write_bytes(figures.curves_png(history, steps))
        (tmp / "index.html").write_text(
            _html(summary, per_class, pairs, gallery, bool(history)),
            encoding="utf-8",
        )
        os.chmod(tmp, runfiles.dir_mode())  # mkdtemp made it 0700
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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
                    f"<div{cls}>{e(figures.short_name(t['name']))} {t['probability']:.1%} "
                    f'<span class="bar" style="width:{width:.2f}em"></span></div>'
                )
            label = e(g["path"]) if g.get("path") else f"#{g['index']}"
            parts.append(
                f'<figure><img src="{g["file"]}" alt="test image {label}">'
                f"<figcaption>{label}: true <b>{e(g['true_name'])}</b> "
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
