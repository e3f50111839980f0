"""The per-image augmentations: geometric moves, flips, crops and erasing (Cutout, random erasing).

The ops are stateless TensorFlow image ops rather than Keras random layers: a Keras layer draws
from a seed *variable* that parallel tf.data map calls advance in a race, so the same seed would
not give the same augmented batches; a per-batch seed does. Pixels moved in from outside the
image are filled with 0 (black, right for MNIST-style data). TensorFlow is imported inside the
functions, so that the registry (and config validation that consults it) stays importable
without TensorFlow.
"""

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import pydantic

from dlintro.data.augment.ops import box_mask, rotate, stateless_seed, translate, uniform, zoom
from dlintro.data.augment.registry import AUGMENTATIONS, AugmentFn
from dlintro.errors import UserError
from dlintro.registry import validated


def _per_image(op: Callable[[Any, Any], Any], low: float, high: float) -> AugmentFn:
    """fn(images, seed) = op(images, one value per image drawn uniformly from [low, high))."""

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        return op(images, uniform(stateless_seed(seed), tf.shape(images)[0], low, high))

    return fn


@AUGMENTATIONS.register("random_translation", description="shift by up to a fraction of size")
@validated
def random_translation(
    height_factor: Annotated[float, pydantic.Field(ge=0, le=0.5)] = 0.1,
    width_factor: Annotated[float, pydantic.Field(ge=0, le=0.5)] = 0.1,
) -> AugmentFn:
    """Shift each image by up to height_factor*H rows and width_factor*W columns."""

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        shape = tf.shape(images)
        sx, sy = (tf.random.experimental.stateless_fold_in(s, i) for i in (0, 1))
        dx = uniform(sx, shape[0], -width_factor, width_factor) * tf.cast(shape[2], tf.float32)
        dy = uniform(sy, shape[0], -height_factor, height_factor) * tf.cast(shape[1], tf.float32)
        return translate(images, dx, dy)

    return fn


@AUGMENTATIONS.register("random_rotation", description="rotate by up to +-degrees")
@validated
def random_rotation(
    degrees: Annotated[float, pydantic.Field(ge=0, le=180)] = 10.0,
) -> AugmentFn:
    """Rotate each image about its centre by an angle drawn from [-degrees, degrees]."""
    limit = math.radians(degrees)
    return _per_image(rotate, -limit, limit)


@AUGMENTATIONS.register("random_zoom", description="zoom in or out by up to a factor")
@validated
def random_zoom(
    factor: Annotated[float, pydantic.Field(ge=0, le=0.9)] = 0.1,
) -> AugmentFn:
    """Scale each image about its centre by a factor drawn from [1-factor, 1+factor]."""
    return _per_image(zoom, 1.0 - factor, 1.0 + factor)


@AUGMENTATIONS.register("random_flip", description="mirror with probability 1/2")
@validated
def random_flip(
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal",
) -> AugmentFn:
    """Flip each image left-right and/or up-down, each with probability 1/2."""
    axes = {"horizontal": (2,), "vertical": (1,), "horizontal_and_vertical": (2, 1)}[mode]

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        batch = tf.shape(images)[0]
        for axis in axes:
            flip = uniform(tf.random.experimental.stateless_fold_in(s, axis), batch, 0, 1) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, [axis]), images)
        return images

    return fn


@AUGMENTATIONS.register("random_crop", description="pad (zeros or reflection), crop at random")
@validated
def random_crop(
    padding: Annotated[int, pydantic.Field(ge=0, le=64)] = 4,
    fill: Literal["zero", "reflect"] = "zero",
) -> AugmentFn:
    """Pad by `padding` pixels and crop a random window of the original size.

    Implemented as an integer shift in [-padding, padding] per axis and image: with `fill:
    zero` the pixels moved in are 0, with `fill: reflect` they mirror the image about its
    border pixel, which is not repeated (PyTorch's and tf.pad's "reflect": d c b | a b c d,
    airbench's translate); reflect needs padding below the image's sides.
    """

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        batch = tf.shape(images)[0]
        dx, dy = (
            tf.random.stateless_uniform(
                [batch],
                seed=tf.random.experimental.stateless_fold_in(s, i),
                minval=-padding,
                maxval=padding + 1,
                dtype=tf.int32,
            )
            for i in (0, 1)
        )
        if fill == "reflect":
            return reflect_shift(images, dx, dy)
        return translate(images, tf.cast(dx, tf.float32), tf.cast(dy, tf.float32), "NEAREST")

    return fn


def reflect_shift(images: Any, dx: Any, dy: Any) -> Any:
    """Move each image's content by integer (dx[i], dy[i]) pixels, filling with its reflection
    (no edge repeat). Two gathers of reflected row and column indices: exact and cheap."""
    import tensorflow as tf

    def source(size: Any, shift: Any) -> Any:
        """[B, size] source index of each output pixel: i - shift, reflected into range."""
        i = tf.range(size)[None, :] - shift[:, None]
        i = tf.abs(i)  # reflect below 0: -1 -> 1
        return (size - 1) - tf.abs((size - 1) - i)  # reflect above size - 1

    shape = tf.shape(images)
    rows = source(shape[1], tf.cast(dy, tf.int32))
    cols = source(shape[2], tf.cast(dx, tf.int32))
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


@AUGMENTATIONS.register(
    "alternating_flip", description="mirror every other epoch, half the images each epoch",
    per_example=True,
)  # fmt: skip
@validated
def alternating_flip() -> AugmentFn:
    """Derandomized horizontal flip (airbench, Keller Jordan 2024): each training image gets a
    seeded coin at the start (from the run's seed and its index in the training set) and is
    mirrored in the epochs e where coin + e is odd: every image is seen mirrored exactly every
    other epoch, about half of them in each epoch, instead of at random (a random flip shows
    an image the same way several epochs in a row). Without the training stream's Examples
    (previews) the batch position stands for the index and the epoch is 0.
    """

    def fn(images: Any, seed: Any, examples: Any = None) -> Any:
        import tensorflow as tf

        flip = flipped(tf.shape(images)[0], examples, stateless_seed(seed)[0])
        return tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)

    return fn


def flipped(batch: Any, examples: Any, fallback_seed: Any) -> Any:
    """[B] bool: whether alternating_flip mirrors each image of the batch."""
    import tensorflow as tf

    if examples is None:
        index, epoch, seed = tf.range(batch), tf.constant(0, tf.int64), fallback_seed
    else:
        index, epoch, seed = examples
    # The coin: a fingerprint (stable everywhere) of "seed/index", one bit of it.
    text = tf.strings.join([tf.strings.as_string(tf.cast(seed, tf.int64)), "/",
                            tf.strings.as_string(tf.cast(index, tf.int64))])  # fmt: skip
    coin = tf.strings.to_hash_bucket_fast(text, 2)
    return tf.equal((coin + tf.cast(epoch, tf.int64)) % 2, 1)


Pixel = Annotated[float, pydantic.Field(ge=0, le=255)]


@AUGMENTATIONS.register("cutout", description="fill `count` random size x size squares")
@validated
def cutout(
    size: Annotated[int, pydantic.Field(ge=1, le=1024)],
    count: Annotated[int, pydantic.Field(ge=1, le=32)] = 1,
    placement: Literal["centre", "inside"] = "centre",
    fill: Pixel | Annotated[Sequence[Pixel], pydantic.Field(min_length=1)] = 0.0,
) -> AugmentFn:
    """Cutout (DeVries & Taylor 2017): fill `count` squares of side `size` per image.

    `placement: centre`: each square's centre is uniform over the image, so a square may be cut
    by the border (as in the paper); `inside`: the square lies wholly inside (airbench96).
    `fill` is a pixel value on 0..255, or one per channel: augmentations run before
    normalization, so 0 is black, and the training set's channel means put 0 there after
    standardization (as airbench, which cuts normalized images).
    """
    values = [float(v) for v in (fill if isinstance(fill, Sequence) else [fill])]

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        keep = tf.ones([batch, height, width], tf.bool)
        side = tf.fill([batch], tf.constant(size, tf.int32))
        inside = placement == "inside"
        for k in range(count):
            corner = [
                tf.random.stateless_uniform(
                    [batch],
                    seed=tf.random.experimental.stateless_fold_in(s, 2 * k + i),
                    maxval=tf.maximum(limit - size + 1, 1) if inside else limit,
                    dtype=tf.int32,
                )
                - (0 if inside else size // 2)
                for i, limit in enumerate((height, width))
            ]
            keep &= ~box_mask(height, width, corner[0], corner[1], side, side)
        channels = images.shape[-1]
        if len(values) not in (1, channels):
            raise UserError(
                f"augmentation 'cutout': fill has {len(values)} values for images with "
                f"{channels} channels: give one value or one per channel"
            )
        return tf.where(keep[..., None], images, tf.constant(values, images.dtype))

    return fn


@AUGMENTATIONS.register("random_erasing", description="erase a random rectangle (p=probability)")
@validated
def random_erasing(
    probability: Annotated[float, pydantic.Field(ge=0, le=1)] = 0.5,
    min_area: Annotated[float, pydantic.Field(gt=0, le=1)] = 0.02,
    max_area: Annotated[float, pydantic.Field(gt=0, le=1)] = 0.4,
    max_aspect: Annotated[float, pydantic.Field(ge=1, le=10)] = 3.3,
    fill: Literal["random", "zero"] = "random",
) -> AugmentFn:
    """Random erasing (Zhong et al. 2017): with `probability`, replace one rectangle per image.

    The rectangle covers a fraction of the image drawn from [min_area, max_area], with an
    aspect ratio (height/width) log-uniform in [1/max_aspect, max_aspect], clipped to the image
    and placed uniformly inside it; it is filled with uniform noise in 0..255 or with 0.
    """
    if min_area > max_area:
        raise UserError(
            f"augmentation 'random_erasing': min_area {min_area} is larger than max_area {max_area}"
        )
    log_aspect = math.log(max_aspect)

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = stateless_seed(seed)
        fold = [tf.random.experimental.stateless_fold_in(s, i) for i in range(6)]
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        area = uniform(fold[0], batch, min_area, max_area) * h_f * w_f
        aspect = tf.exp(uniform(fold[1], batch, -log_aspect, log_aspect))
        box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h_f)
        box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w_f)
        top = tf.floor(uniform(fold[2], batch, 0, 1) * (h_f - box_h + 1.0))
        left = tf.floor(uniform(fold[3], batch, 0, 1) * (w_f - box_w + 1.0))
        as_int = [tf.cast(v, tf.int32) for v in (top, left, box_h, box_w)]
        erase = box_mask(height, width, *as_int)
        erase &= (uniform(fold[4], batch, 0, 1) < probability)[:, None, None]
        if fill == "random":
            value = tf.random.stateless_uniform(tf.shape(images), seed=fold[5], maxval=255.0)
            value = tf.round(value)
        else:
            value = tf.zeros_like(images)
        return tf.where(erase[..., None], value, images)

    return fn
