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


def curves_png(
    history: list[dict[str, float]], steps: list[dict[str, float]] | None = None
) -> bytes:
    """The learning curves (curves_figure) as a PNG."""
    return _png(curves_figure(history, steps))


def curves_figure(
    history: list[dict[str, float]], steps: list[dict[str, float]] | None = None
) -> Any:
    """Loss, accuracy and learning rate over the training steps: the epoch rows of history.csv
    (training and validation, marked at each epoch's last step) and, from `steps`, the progress
    lines' training loss and learning rate (rows {step, loss, learning_rate}; dlintro.board
    .reader.step_history). With both, a one-epoch run still shows how its loss fell, not one dot.
    The top axis counts epochs."""
    from matplotlib.ticker import FuncFormatter

    fig = _figure(12.0, 3.8)
    steps = steps or []
    x = [r.get("step", math.nan) for r in history]
    per_epoch = _steps_per_epoch(history)
    panels = [("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate")]
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        line = [
            (r["step"], r.get(key, math.nan)) for r in steps if r.get(key, math.nan) == r.get(key)
        ]
        if key != "accuracy" and len(line) > 1:
            label = "training, epoch so far (log steps)" if key == "loss" else None
            ax.plot(*zip(*line, strict=True), linewidth=1.2, alpha=0.8, label=label)
        train = [r.get(key, math.nan) for r in history]
        if key != "learning_rate" or len(line) <= 1:
            ax.plot(x, train, marker="o", markersize=4, label="training (epoch)")
        val = [r.get(f"val_{key}", math.nan) for r in history]
        if any(v == v for v in val):
            ax.plot(x, val, marker="o", markersize=4, label="validation (epoch)")
        if len(history) == 1 and key == "accuracy":  # a lone point: say its value
            for values in (train, val):
                if values[0] == values[0]:
                    ax.annotate(f"{values[0]:.2%}", (x[0], values[0]), textcoords="offset points",
                                xytext=(6, 4), fontsize=8)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        last = max([*x, *(r["step"] for r in steps)], default=0)
        if last == last and last > 0:  # steps count from 0: a short run is not a dot in a void
            ax.set_xlim(0, last * 1.04)
        if len(history) <= 1 and (key == "accuracy" or len(line) <= 1):  # no curve: a true scale
            top = max([v for v in (*train, *val) if v == v], default=1.0)
            ax.set_ylim(0, 1.0 if key == "accuracy" else top * 1.5 or 1.0)
        if per_epoch:
            epochs = ax.secondary_xaxis(
                "top", functions=(lambda s, n=per_epoch: s / n, lambda e, n=per_epoch: e * n)
            )
            epochs.set_xlabel("epoch", fontsize=8)
            epochs.tick_params(labelsize=7)
        if key != "learning_rate":
            ax.legend(fontsize=7)
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    return fig


def _steps_per_epoch(history: list[dict[str, float]]) -> float:
    """Steps per epoch from the first full epoch row (0 when unknown)."""
    for r in history:
        step, epoch = r.get("step", math.nan), r.get("epoch", math.nan)
        if step == step and epoch == epoch and epoch >= 1:
            return float(step) / float(epoch)
    return 0.0


def preview_png(sample: Any, cols: int = 8, title: str = "") -> bytes:
    """A dlintro.data.preview.Sample as a labelled figure: rows of originals, each above the
    same images augmented; every original titled with its class, every mixed image (mixup,
    cutmix) with its two largest label shares. Images are enlarged without smoothing."""
    originals = displayable(sample.originals)
    augmented = None if sample.augmented is None else displayable(sample.augmented)
    n = len(originals)
    cols = max(1, min(cols, n))
    blocks = math.ceil(n / cols)
    per_block = 1 if augmented is None else 2
    cell = 1.35
    fig = _figure(cell * cols + 0.9, (cell + 0.25) * blocks * per_block + 0.6)
    grid = fig.add_gridspec(blocks * per_block, cols)
    names = sample.class_names
    for i in range(n):
        block, col = divmod(i, cols)
        rows = [(originals, names[int(sample.labels[i])], "original")]
        if augmented is not None:
            rows.append((augmented, _mixed_caption(sample, i), "augmented"))
        for j, (images, caption, kind) in enumerate(rows):
            ax = fig.add_subplot(grid[block * per_block + j, col])
            _show(ax, images[i])
            ax.set_title(short_name(caption, 28), fontsize=8 if len(caption) <= 18 else 7)
            if col == 0:
                ax.set_ylabel(kind, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


def _show(ax: Any, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _mixed_caption(sample: Any, i: int) -> str:
    """'' for an image with its own label; '7 62% + 1 38%' for a mixed one."""
    if sample.soft_labels is None:
        return ""
    shares = sample.soft_labels[i]
    top = np.argsort(-shares, kind="stable")[:2]
    if shares[top[1]] < 0.005:
        return ""
    return " + ".join(f"{short_name(sample.class_names[c], 8)} {shares[c]:.0%}" for c in top)


def short_name(name: str, n: int = 14) -> str:
    """`name` cut to n characters (an ellipsis marks the cut)."""
    return name if len(name) <= n else name[: n - 1] + "…"


def caption(class_names: list[str], true: int, predicted: int, p: float) -> str:
    """The title of a misclassified image: its true and predicted class, and p."""
    return (
        f"true {short_name(class_names[true])}\npred {short_name(class_names[predicted])} {p:.0%}"
    )
