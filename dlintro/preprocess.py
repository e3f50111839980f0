"""Preprocess an image file for a dlintro model outside dlintro (NumPy and Pillow only).

An exported artifact, and a run's inference.keras, have the normalization built in; what they
leave to the caller is what `dlintro predict` does before it: decode the file, convert it to the
run's channels (grey or RGB), and resize it to the input size (antialiased bilinear, aspect ratio
not kept); for a 1-channel 28x28 run (MNIST-like), a photo of a dark digit on light paper (mean
brightness above 0.5) is first made to look like an MNIST digit: transparency over white, grey,
inverted, paper level removed, cropped to the ink, scaled so its longer side is 20 px, centred
by centre of mass in the 28x28 frame. `preprocess` returns uint8 [H, W, C]; stack several with
np.stack for a batch.

Close to `dlintro predict`, not bit-identical: predict decodes and resizes with TensorFlow,
this with Pillow (values differ by a level or two of 255 near edges). This file imports nothing
of dlintro: `dlintro export` copies its source into the artifact's JSON ("preprocess").
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

BOX_FRACTION = 20 / 28  # MNIST: the digit's longer side is 20 px in a 28 px frame
INK_FLOOR = 0.2  # after stretching, weaker "ink" (paper texture, shadows) is background
BLANK = 0.1  # below this ink contrast there is no digit: an all-black frame


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey images (mode I;16, I) scaled to 8 bits, as TensorFlow decodes them."""
    if image.mode.startswith("I"):
        values = np.asarray(image, np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    return image


def _on_white(image: Image.Image) -> np.ndarray:
    """Grey 0..255 float [h, w] with transparent parts over white paper."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("L"), np.float64)


def mnist_way(grey: np.ndarray, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """A dark digit on light paper, grey 0..255 [h, w], as an MNIST digit: uint8 [size]."""
    ink = 1.0 - np.asarray(grey, np.float64) / 255.0
    ink = ink - np.median(ink)
    peak = float(ink.max())
    frame = np.zeros(size, np.float64)
    if peak < BLANK:
        return frame.astype(np.uint8)
    ink = np.clip((ink / peak - INK_FLOOR) / (1.0 - INK_FLOOR), 0.0, 1.0)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = max(1, round(min(size) * BOX_FRACTION))
    longer = max(crop.shape)
    new = (max(1, round(crop.shape[0] * box / longer)), max(1, round(crop.shape[1] * box / longer)))
    resized = Image.fromarray(crop.astype(np.float32), "F").resize(new[::-1], Image.BILINEAR)
    scaled = np.clip(np.asarray(resized, np.float64), 0.0, 1.0)
    if scaled.sum() <= 0:
        return frame.astype(np.uint8)
    scaled /= scaled.max()  # resampling dims thin strokes; MNIST's strokes reach 255
    ys, xs = np.indices(scaled.shape)
    mass = scaled.sum()
    cy, cx = (ys * scaled).sum() / mass, (xs * scaled).sum() / mass
    top, left = round(size[0] / 2 - 0.5 - cy), round(size[1] / 2 - 0.5 - cx)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + new[0], size[0]), min(left + new[1], size[1])
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = scaled[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.round(frame * 255.0).astype(np.uint8)


def preprocess(
    path: str | os.PathLike[str], height: int, width: int, channels: int, invert: str = "auto"
) -> np.ndarray:
    """An image file as the model's input: uint8 [height, width, channels].

    invert (as `dlintro predict --invert`): "auto" applies the MNIST way to 1-channel 28x28
    inputs when the image is mostly light; "yes" to every image (any input size); "no" never.
    """
    image = _eight_bit(Image.open(path))
    image.load()
    if invert == "yes" or (invert == "auto" and (height, width, channels) == (28, 28, 1)):
        grey = _on_white(image)
        if invert == "yes" or grey.mean() / 255.0 > 0.5:
            frame = mnist_way(grey, (height, width))[..., None]
            return np.repeat(frame, channels, axis=-1)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, np.uint8).reshape(height, width, channels)
