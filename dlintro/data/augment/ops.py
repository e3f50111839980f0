"""The stateless TensorFlow image ops that the augmentations share (imported inside functions).

Seeds are stateless seeds: an int or a shape-[2] integer tensor (see `stateless_seed`). Pixels
moved in from outside an image are filled with 0.
"""

from collections.abc import Sequence
from typing import Any


def stateless_seed(seed: Any) -> Any:
    """A shape-[2] int64 stateless seed from an int or a [2] tensor."""
    import tensorflow as tf

    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return seed


def uniform(seed: Any, batch: Any, low: float, high: float) -> Any:
    """[batch] float32 draws, uniform in [low, high), from a stateless seed."""
    import tensorflow as tf

    return tf.random.stateless_uniform([batch], seed=seed, minval=low, maxval=high)


def affine(images: Any, a: Sequence[Any], b: Sequence[Any], interpolation: str) -> Any:
    """Resample: output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    zeros = tf.zeros([batch], tf.float32)
    rows = [tf.broadcast_to(tf.cast(v, tf.float32), [batch]) for v in (*a, *b)]
    transforms = tf.stack([*rows, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(out, images.shape)


def translate(images: Any, dx: Any, dy: Any, interpolation: str = "BILINEAR") -> Any:
    """Move the content of each image by (dx, dy) pixels (scalars or one per image)."""
    return affine(images, (1.0, 0.0, -dx), (0.0, 1.0, -dy), interpolation)


def centre(images: Any) -> tuple[Any, Any]:
    """(cx, cy): the centre of the images in pixel coordinates."""
    import tensorflow as tf

    shape = tf.cast(tf.shape(images), tf.float32)
    return (shape[2] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0


def rotate(images: Any, angle: Any) -> Any:
    """Rotate each image about its centre by `angle` radians (a scalar or one per image)."""
    import tensorflow as tf

    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = centre(images)
    a = (cos, -sin, cx - cos * cx + sin * cy)
    b = (sin, cos, cy - sin * cx - cos * cy)
    return affine(images, a, b, "BILINEAR")


def zoom(images: Any, scale: Any) -> Any:
    """Scale each image about its centre (scale > 1 enlarges; a scalar or one per image)."""
    inv = 1.0 / scale
    cx, cy = centre(images)
    return affine(images, (inv, 0.0, cx - inv * cx), (0.0, inv, cy - inv * cy), "BILINEAR")


def box_mask(height: Any, width: Any, top: Any, left: Any, box_h: Any, box_w: Any) -> Any:
    """[B, H, W] bool: inside the box of rows [top, top+box_h), columns [left, left+box_w)."""
    import tensorflow as tf

    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    box_h, box_w = box_h[:, None, None], box_w[:, None, None]
    return (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
