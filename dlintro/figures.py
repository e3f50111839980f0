"""The figures of a run, shared by its report (dlintro.report) and its TensorBoard logs
(dlintro.board.writer): the confusion matrix, the misclassified-images gallery and the learning
curves as PNG bytes, and the image helpers behind them.

Images are shown de-normalized with the run's own normalization (meta.json), i.e. as the
model's input pixels. Figures are drawn with matplotlib's Agg canvas (no display, no global
pyplot state); matplotlib is imported inside the functions.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from dlintro.data.normalization import invert

GALLERY_SIZE = 24  # worst misclassified images shown (report and TensorBoard)
CELL_PIXELS = 96  # gallery images are enlarged (nearest neighbour) to at least this height


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


def batch_grid(x: np.ndarray, normalization: dict[str, Any], limit: int = 64) -> np.ndarray:
    """Up to `limit` model inputs [N,H,W,C], de-normalized, as one uint8 grid of 8 columns."""
    from dlintro.data.preview import tile

    images = displayable(invert(x[:limit], normalization))
    cols = min(8, len(images))
    return tile(images, math.ceil(len(images) / cols), cols)


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
    labels = [short_name(s) for s in class_names]
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


def short_name(name: str, n: int = 14) -> str:
    """`name` cut to n characters (an ellipsis marks the cut)."""
    return name if len(name) <= n else name[: n - 1] + "…"


def caption(class_names: list[str], true: int, predicted: int, p: float) -> str:
    """The title of a misclassified image: its true and predicted class, and p."""
    return (
        f"true {short_name(class_names[true])}\npred {short_name(class_names[predicted])} {p:.0%}"
    )
