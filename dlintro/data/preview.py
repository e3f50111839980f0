"""A look at what training sees: augmented training images next to the originals.

`sample` draws a seeded sample of training images and applies the configured augmentations
exactly as the training pipeline does (float pixels 0..255, one stateless seed for the batch;
mixing ones, mixup and cutmix, mix the one-hot labels too). `dlintro preview` draws it as a
labelled figure (dlintro.figures.preview_png); `augmented_grid` tiles the augmented images into
one plain uint8 image with a 2-pixel grey border between cells. Normalization is not applied:
both show pixels. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlintro import runfiles
from dlintro.errors import UserError

BORDER = 2
BORDER_VALUE = 128
MAX_CELLS = 4096
MAX_SAMPLES = 256  # the labelled figure: 2 panels per sample


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """uint8 images [N,H,W,C] (N <= rows*cols) -> one uint8 image, row-major, grey borders."""
    n, h, w, c = images.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    grid = np.full(
        (rows * (h + BORDER) + BORDER, cols * (w + BORDER) + BORDER, c), BORDER_VALUE, np.uint8
    )
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = BORDER + r * (h + BORDER), BORDER + q * (w + BORDER)
        grid[top : top + h, left : left + w] = images[k]
    return grid


def augmented_grid(
    data_cfg: Any, seed: int, data_dir: str | Path | None = None, rows: int = 8, cols: int = 8
) -> np.ndarray:
    """A rows x cols grid of augmented training images (uint8 [H', W', C]), seeded.

    `data_cfg` is a DataConfig (dataset, params, augment are used). With no augmentations the
    grid shows the plain images. The same seed gives the same grid.
    """
    if rows < 1 or cols < 1 or rows * cols > MAX_CELLS:
        raise UserError(
            f"preview grid {rows}x{cols}: rows and cols must be at least 1 and "
            f"rows*cols at most {MAX_CELLS}"
        )
    drawn = sample(data_cfg, seed, data_dir, rows * cols, mixing=False)
    shown = drawn.augmented if drawn.augmented is not None else drawn.originals
    return tile(shown, rows, cols)


@dataclass(frozen=True)
class Sample:
    """Training images before and after augmentation, with their labels.

    `augmented` is None without augmentations; `soft_labels` [N, classes] is set when a
    mixing augmentation (mixup, cutmix) mixed the labels too.
    """

    originals: np.ndarray  # uint8 [N,H,W,C]
    augmented: np.ndarray | None  # uint8 [N,H,W,C]
    labels: np.ndarray  # int64 [N]
    soft_labels: np.ndarray | None
    class_names: list[str]
    augmentations: list[str]


def sample(
    data_cfg: Any,
    seed: int,
    data_dir: str | Path | None = None,
    count: int = 32,
    mixing: bool = True,
) -> Sample:
    """`count` seeded training images, augmented as training augments them (the mixing
    augmentations too, with `mixing`). The same seed gives the same sample."""
    import tensorflow as tf

    from dlintro.data.augment import make_augmenter, make_mixer
    from dlintro.data.sources import data_root, load_dataset

    specs = list(data_cfg.augment or [])
    augment = make_augmenter(specs)
    mix = make_mixer(specs) if mixing else None
    info, arrays = load_dataset(data_cfg.dataset, data_root(data_dir), data_cfg.params)
    x = arrays.x_train
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(x), size=min(count, len(x)), replace=False)
    labels = np.asarray(arrays.y_train[picked], np.int64)
    images = tf.constant(x[picked], tf.float32)
    batch_seed = tf.constant([seed, 0], tf.int64)
    if augment is not None:
        images = augment(images, batch_seed)
    soft = None
    if mix is not None:
        onehot = tf.one_hot(labels, int(info.num_classes), dtype=tf.float32)
        images, mixed = mix(images, onehot, batch_seed)
        soft = np.asarray(mixed, np.float64)
    shown = None
    if augment is not None or mix is not None:
        shown = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
    names = [a.name for a in specs if mixing or not _is_mixing(a.name)]
    return Sample(x[picked], shown, labels, soft, list(info.class_names), names)


def _is_mixing(name: str) -> bool:
    from dlintro.data.augment import is_mixing

    return is_mixing(name)


def write_file(path: str | Path, data: bytes, what: str = "it") -> Path:
    """Write `data` to `path` atomically, with the usual mode (0666 minus the umask); `what`
    names the file in the error message."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            os.fchmod(fd, runfiles.file_mode())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 image [H,W] or [H,W,C] (C in 1, 3, 4) as a PNG, atomically; return path."""
    import tensorflow as tf

    path = Path(path)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png needs uint8 [H,W,1|3|4], got {image.dtype} {image.shape}")
    return write_file(path, tf.io.encode_png(image).numpy(), "the PNG")


__all__ = ["Sample", "augmented_grid", "sample", "tile", "write_file", "write_png"]
