"""Training-time augmentations, applied to whole float batches (pixels 0..255) in tf.data.

Each registered builder validates its parameters (ranges included) and returns
`fn(images [B,H,W,C] float32, seed) -> images`, where `seed` is a stateless seed (an int or a
shape-[2] integer tensor). The ops are stateless TensorFlow image ops rather than Keras random
layers: a Keras layer draws from a seed *variable* that parallel tf.data map calls advance in a
race, so the same seed would not give the same augmented batches; a per-batch seed does.
Pixels moved in from outside the image are filled with 0 (black, right for MNIST-style data).

Mixing augmentations (mixup, cutmix; registered with `mixing=True`) combine pairs of examples
of a batch and so change labels too: their builders return `fn(images, labels [B, C] float32,
seed) -> (images, labels)`. `make_augmenter` leaves them out and `make_mixer` composes them;
the pipeline runs them after the per-image augmentations and then yields soft labels.

TensorFlow is imported inside the functions, so that this registry (and config validation that
consults it) stays importable without TensorFlow.
"""

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import pydantic

from dlintro.data.sources import check_builder_params
from dlintro.errors import UserError
from dlintro.registry import Registry, validated

AugmentFn = Callable[[Any, Any], Any]
MixFn = Callable[[Any, Any, Any], tuple[Any, Any]]
AUGMENTATIONS: Registry[Callable[..., AugmentFn]] = Registry("augmentation")


def _seed(seed: Any) -> Any:
    """A shape-[2] int64 stateless seed from an int or a [2] tensor."""
    import tensorflow as tf

    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return seed


def _uniform(seed: Any, batch: Any, low: float, high: float) -> Any:
    import tensorflow as tf

    return tf.random.stateless_uniform([batch], seed=seed, minval=low, maxval=high)


def _affine(images: Any, a: Sequence[Any], b: Sequence[Any], interpolation: str) -> Any:
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
    return _affine(images, (1.0, 0.0, -dx), (0.0, 1.0, -dy), interpolation)


def _centre(images: Any) -> tuple[Any, Any]:
    """(cx, cy): the centre of the images in pixel coordinates."""
    import tensorflow as tf

    shape = tf.cast(tf.shape(images), tf.float32)
    return (shape[2] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0


def rotate(images: Any, angle: Any) -> Any:
    """Rotate each image about its centre by `angle` radians (a scalar or one per image)."""
    import tensorflow as tf

    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = _centre(images)
    a = (cos, -sin, cx - cos * cx + sin * cy)
    b = (sin, cos, cy - sin * cx - cos * cy)
    return _affine(images, a, b, "BILINEAR")


def zoom(images: Any, scale: Any) -> Any:
    """Scale each image about its centre (scale > 1 enlarges; a scalar or one per image)."""
    inv = 1.0 / scale
    cx, cy = _centre(images)
    return _affine(images, (inv, 0.0, cx - inv * cx), (0.0, inv, cy - inv * cy), "BILINEAR")


@AUGMENTATIONS.register("random_translation", description="shift by up to a fraction of size")
@validated
def random_translation(
    height_factor: Annotated[float, pydantic.Field(ge=0, le=0.5)] = 0.1,
    width_factor: Annotated[float, pydantic.Field(ge=0, le=0.5)] = 0.1,
) -> AugmentFn:
    """Shift each image by up to height_factor*H rows and width_factor*W columns."""

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = _seed(seed)
        shape = tf.shape(images)
        sx, sy = (tf.random.experimental.stateless_fold_in(s, i) for i in (0, 1))
        dx = _uniform(sx, shape[0], -width_factor, width_factor) * tf.cast(shape[2], tf.float32)
        dy = _uniform(sy, shape[0], -height_factor, height_factor) * tf.cast(shape[1], tf.float32)
        return translate(images, dx, dy)

    return fn


@AUGMENTATIONS.register("random_rotation", description="rotate by up to +-degrees")
@validated
def random_rotation(
    degrees: Annotated[float, pydantic.Field(ge=0, le=180)] = 10.0,
) -> AugmentFn:
    """Rotate each image about its centre by an angle drawn from [-degrees, degrees]."""
    limit = math.radians(degrees)

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        batch = tf.shape(images)[0]
        return rotate(images, _uniform(_seed(seed), batch, -limit, limit))

    return fn


@AUGMENTATIONS.register("random_zoom", description="zoom in or out by up to a factor")
@validated
def random_zoom(
    factor: Annotated[float, pydantic.Field(ge=0, le=0.9)] = 0.1,
) -> AugmentFn:
    """Scale each image about its centre by a factor drawn from [1-factor, 1+factor]."""

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        batch = tf.shape(images)[0]
        return zoom(images, _uniform(_seed(seed), batch, 1.0 - factor, 1.0 + factor))

    return fn


@AUGMENTATIONS.register("random_flip", description="mirror with probability 1/2")
@validated
def random_flip(
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal",
) -> AugmentFn:
    """Flip each image left-right and/or up-down, each with probability 1/2."""
    axes = {"horizontal": (2,), "vertical": (1,), "horizontal_and_vertical": (2, 1)}[mode]

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = _seed(seed)
        batch = tf.shape(images)[0]
        for axis in axes:
            flip = _uniform(tf.random.experimental.stateless_fold_in(s, axis), batch, 0, 1) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, [axis]), images)
        return images

    return fn


@AUGMENTATIONS.register("random_crop", description="pad with zeros, crop back at random")
@validated
def random_crop(padding: Annotated[int, pydantic.Field(ge=0, le=64)] = 4) -> AugmentFn:
    """Zero-pad by `padding` pixels and crop a random window of the original size.

    Implemented as an integer shift in [-padding, padding] with zero fill: the same images.
    """

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = _seed(seed)
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
        return translate(images, tf.cast(dx, tf.float32), tf.cast(dy, tf.float32), "NEAREST")

    return fn


def is_mixing(name: str) -> bool:
    """Whether augmentation `name` mixes examples (and so needs soft labels)."""
    return bool(AUGMENTATIONS.meta(name).get("mixing"))


def _build_steps(specs: Sequence[Any], mixing: bool) -> list[tuple[int, Any]]:
    """(position in the list, built fn) for the per-image (or the mixing) entries of `specs`."""
    steps = []
    for i, spec in enumerate(specs):
        name, params = spec.name, dict(spec.params or {})
        check_builder_params(AUGMENTATIONS, name, params)
        if is_mixing(name) != mixing:
            continue
        try:
            steps.append((i, AUGMENTATIONS.get(name)(**params)))
        except pydantic.ValidationError as exc:
            raise UserError(f"augmentation '{name}': {exc.errors()[0]['msg']}") from None
    return steps


def make_augmenter(specs: Sequence[Any]) -> AugmentFn | None:
    """Compose the configured per-image augmentations (objects with .name and .params), in order.

    Names and params are checked here (mixing ones too), so a bad entry fails before any data is
    loaded; the composed function gives each step its own seed folded from the batch seed and
    its position in the list. Mixing augmentations are left to `make_mixer`.
    """
    steps = _build_steps(specs, mixing=False)
    if not steps:
        return None

    def augment(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = _seed(seed)
        for i, step in steps:
            images = step(images, tf.random.experimental.stateless_fold_in(s, 1000 + i))
        return images

    return augment


def make_mixer(specs: Sequence[Any]) -> MixFn | None:
    """Compose the configured mixing augmentations, in order, or None when there are none.

    `mix(images, labels, seed)` takes float images and one-hot float labels [B, C] and returns
    both mixed; each step's seed is folded from the batch seed and its position in the list.
    """
    steps = _build_steps(specs, mixing=True)
    if not steps:
        return None

    def mix(images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        s = _seed(seed)
        for i, step in steps:
            images, labels = step(
                images, labels, tf.random.experimental.stateless_fold_in(s, 1000 + i)
            )
        return images, labels

    return mix


def _box_mask(height: Any, width: Any, top: Any, left: Any, box_h: Any, box_w: Any) -> Any:
    """[B, H, W] bool: inside the box of rows [top, top+box_h), columns [left, left+box_w)."""
    import tensorflow as tf

    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    box_h, box_w = box_h[:, None, None], box_w[:, None, None]
    return (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)


@AUGMENTATIONS.register("cutout", description="zero `count` random size x size squares")
@validated
def cutout(
    size: Annotated[int, pydantic.Field(ge=1, le=1024)],
    count: Annotated[int, pydantic.Field(ge=1, le=32)] = 1,
) -> AugmentFn:
    """Cutout (DeVries & Taylor 2017): zero `count` squares of side `size` per image.

    Each square's centre is uniform over the image, so a square may be cut by the border (as in
    the paper). The fill is 0 (black: augmentations run before normalization).
    """

    def fn(images: Any, seed: Any) -> Any:
        import tensorflow as tf

        s = _seed(seed)
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        keep = tf.ones([batch, height, width], tf.bool)
        side = tf.fill([batch], tf.constant(size, tf.int32))
        for k in range(count):
            centre = [
                tf.random.stateless_uniform(
                    [batch],
                    seed=tf.random.experimental.stateless_fold_in(s, 2 * k + i),
                    maxval=limit,
                    dtype=tf.int32,
                )
                for i, limit in enumerate((height, width))
            ]
            top, left = centre[0] - size // 2, centre[1] - size // 2
            keep &= ~_box_mask(height, width, top, left, side, side)
        return images * tf.cast(keep, images.dtype)[..., None]

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

        s = _seed(seed)
        fold = [tf.random.experimental.stateless_fold_in(s, i) for i in range(6)]
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        area = _uniform(fold[0], batch, min_area, max_area) * h_f * w_f
        aspect = tf.exp(_uniform(fold[1], batch, -log_aspect, log_aspect))
        box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h_f)
        box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w_f)
        top = tf.floor(_uniform(fold[2], batch, 0, 1) * (h_f - box_h + 1.0))
        left = tf.floor(_uniform(fold[3], batch, 0, 1) * (w_f - box_w + 1.0))
        as_int = [tf.cast(v, tf.int32) for v in (top, left, box_h, box_w)]
        erase = _box_mask(height, width, *as_int)
        erase &= (_uniform(fold[4], batch, 0, 1) < probability)[:, None, None]
        if fill == "random":
            value = tf.random.stateless_uniform(tf.shape(images), seed=fold[5], maxval=255.0)
            value = tf.round(value)
        else:
            value = tf.zeros_like(images)
        return tf.where(erase[..., None], value, images)

    return fn


# The mixing augmentations (mixup, cutmix) register themselves into AUGMENTATIONS on import.
import dlintro.data.mixing  # noqa: E402, F401
