"""A look at what training sees: a grid of augmented training images, written as a PNG.

`augmented_grid` draws a seeded sample of training images, applies the configured augmentations
exactly as the training pipeline does (float pixels 0..255, one stateless seed for the batch),
and tiles them into one uint8 image with a 2-pixel grey border between cells. Normalization is
not applied: the grid shows pixels. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlintro.errors import UserError

BORDER = 2
BORDER_VALUE = 128
MAX_CELLS = 4096


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
    import tensorflow as tf

    from dlintro.data.augment import make_augmenter
    from dlintro.data.sources import data_root, load_dataset

    augment = make_augmenter(list(data_cfg.augment or []))
    _, arrays = load_dataset(data_cfg.dataset, data_root(data_dir), data_cfg.params)
    x = arrays.x_train
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(x), size=min(rows * cols, len(x)), replace=False)
    images = tf.constant(x[picked], tf.float32)
    if augment is not None:
        images = augment(images, tf.constant([seed, 0], tf.int64))
    out = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
    return tile(out, rows, cols)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 image [H,W] or [H,W,C] (C in 1, 3, 4) as a PNG, atomically; return path."""
    import tensorflow as tf

    path = Path(path)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png needs uint8 [H,W,1|3|4], got {image.dtype} {image.shape}")
    data = tf.io.encode_png(image).numpy()
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot write the PNG ({exc.strerror or exc})") from None
    return path


__all__ = ["augmented_grid", "tile", "write_png"]
