"""Image files from outside (image folders, predict's inputs): screened, then decoded.

Screening comes first and never decodes: only a regular file is read (a FIFO, device or
socket named like an image is refused by path, never opened, so nothing waits forever), and its
width x height, read from the header (PNG, JPEG, GIF and BMP directly, other formats with PIL's
lazy open), must be within the IMAGE_PIXELS limit (dlintro.limits: 50,000,000 pixels,
`DLINTRO_MAX_IMAGE_PIXELS`). A file neither recognizes is left to TensorFlow's decoders, which
then say why it does not decode.

Decoding is TensorFlow's, in parallel inside tf.data (JPEG with the accurate DCT, like PIL),
converted to `channels` and resized to `image_size` with antialiased bilinear resampling when
the size differs (aspect ratio not kept). TensorFlow and PIL are imported inside the functions.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dlintro import limits
from dlintro.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DECODE_BATCH = 1024


# JPEG start-of-frame markers (they hold the size); C4, C8 and CC are other segments
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SCAN = 1 << 20  # a JPEG whose frame header is not in its first MiB is left to PIL


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking its segments (after FF D8)."""
    f.seek(2)
    while f.tell() < _JPEG_SCAN:
        byte = f.read(1)
        if byte != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            continue
        head = f.read(2)
        if len(head) < 2:
            return None
        length = struct.unpack(">H", head)[0]
        if m in _SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        if length < 2:
            return None
        f.seek(length - 2, 1)
    return None


def _quick_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, GIF or BMP from its first bytes; None otherwise."""
    head = f.read(32)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(f)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head[:2] == b"BM" and len(head) >= 26:
        if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    return None


def _pil_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) by PIL's lazy open (no decoding); None when PIL does not know it."""
    from PIL import Image

    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(f) as image:
                return int(image.size[0]), int(image.size[1])
        except Image.DecompressionBombError as exc:  # PIL's own bound (2 x its MAX_IMAGE_PIXELS)
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = int(found.group(1)) if found else 2 * int(Image.MAX_IMAGE_PIXELS or 0)
            return pixels, 1
        except Exception:  # PIL raises many types for what it cannot parse
            return None


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding: PNG, JPEG, GIF and BMP
    headers are read directly (about 20 us a file), anything else by PIL's lazy open; None when
    neither recognizes the file. Only a regular file is opened (UserError or OSError
    otherwise)."""
    with limits.open_regular(path) as f:
        return _quick_size(f) or _pil_size(f)


def screen(path: str | Path) -> str:
    """Why `path` must not be decoded ('' when it may): not a regular file, unreadable, or more
    pixels than the IMAGE_PIXELS limit (from the header). Never blocks, never decodes."""
    limit = limits.IMAGE_PIXELS
    try:
        size = header_size(path)
    except UserError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if size is None:
        return ""
    width, height = size
    if width * height > limit.value():
        shape = f"{width}x{height} = " if height > 1 else ""
        return f"{shape}{width * height:,} pixels, more than {limit.text()}"
    return ""


def _decode_fn(image_size: tuple[int, int], channels: int) -> Any:
    """(index, path) -> (index, uint8 image [h, w, channels]); fails on unreadable files."""
    import tensorflow as tf

    size = tf.constant(image_size, tf.int32)

    def decode(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raw = tf.io.read_file(path)
        image = tf.cond(
            tf.io.is_jpeg(raw),
            lambda: tf.io.decode_jpeg(raw, channels=channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(raw, channels=channels, expand_animations=False),
        )
        image = tf.ensure_shape(image, [None, None, channels])

        def resized() -> tf.Tensor:
            out = tf.image.resize(image, size, method="bilinear", antialias=True)
            return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)

        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
        image = tf.cond(same, lambda: image, resized)
        return index, tf.ensure_shape(image, [*image_size, channels])

    return decode


def decode_images(
    files: tuple[str, ...], image_size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Screen, then decode files in parallel: (images uint8 [N,h,w,c], mask of the files that
    decoded). A file that fails `screen` is never opened by TensorFlow."""
    import tensorflow as tf

    n = len(files)
    images = np.zeros((n, *image_size, channels), np.uint8)
    ok = np.zeros(n, bool)
    allowed = np.asarray([not screen(f) for f in files], bool)
    index = np.flatnonzero(allowed).astype(np.int64)
    if not len(index):
        return images, ok
    ds = tf.data.Dataset.from_tensor_slices((index, np.asarray(files)[index]))
    ds = ds.map(
        _decode_fn(image_size, channels), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    ds = ds.ignore_errors().batch(DECODE_BATCH)
    for done, batch in ds.as_numpy_iterator():
        images[done] = batch
        ok[done] = True
    return images, ok


def decode_problem(path: str, image_size: tuple[int, int], channels: int) -> str:
    """Why one file does not decode ('' when it does), in one line (screened first)."""
    import tensorflow as tf

    problem = screen(path)
    if problem:
        return problem
    try:
        _decode_fn(image_size, channels)(tf.constant(0, tf.int64), tf.constant(path))
    except (tf.errors.OpError, ValueError) as exc:
        text = getattr(exc, "message", "") or str(exc)
        return " ".join(text.split("[Op:")[0].split()) or type(exc).__name__
    return ""


__all__ = ["IMAGE_SUFFIXES", "decode_images", "decode_problem", "header_size", "screen"]
