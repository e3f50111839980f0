"""Mixing augmentations (mixup, cutmix): they combine pairs of examples of a batch, so they change
the labels too and make the training stream yield soft labels (see dlintro.data.augment.registry).

Each builder returns `fn(images [B,H,W,C] float32, labels [B, C] float32, seed) -> (images,
labels)`, seeded statelessly per batch like every augmentation, so exact resume still holds.
"""

from typing import Annotated, Any

import pydantic

from dlintro.data.augment.ops import box_mask, stateless_seed
from dlintro.data.augment.registry import AUGMENTATIONS, MixFn
from dlintro.registry import validated


def _partners(seed: Any, batch: Any) -> Any:
    """A random permutation of range(batch): example i is mixed with example perm[i]."""
    import tensorflow as tf

    return tf.argsort(tf.random.stateless_uniform([batch], seed=seed))


def _beta(seed: Any, alpha: float) -> Any:
    """One float32 draw from Beta(alpha, alpha), as G1 / (G1 + G2) with Gi ~ Gamma(alpha)."""
    import tensorflow as tf

    g = tf.random.stateless_gamma([2], seed=seed, alpha=alpha, dtype=tf.float32)
    return tf.math.divide_no_nan(g[0], g[0] + g[1])


def mix_pairs(labels: Any, perm: Any, lam: Any) -> Any:
    """lam * labels + (1 - lam) * labels[perm] (also used for the images of mixup)."""
    import tensorflow as tf

    return lam * labels + (1.0 - lam) * tf.gather(labels, perm)


Alpha = Annotated[float, pydantic.Field(gt=0, le=100)]


@AUGMENTATIONS.register("mixup", description="blend pairs of images and labels", mixing=True)
@validated
def mixup(alpha: Alpha = 0.2) -> MixFn:
    """mixup (Zhang et al. 2018): x = lam x_i + (1-lam) x_j, y = lam y_i + (1-lam) y_j.

    One lam ~ Beta(alpha, alpha) per batch and a random pairing j = perm[i] of the batch (as in
    the paper's code; an example may be paired with itself).
    """

    def fn(images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        s = stateless_seed(seed)
        fold = [tf.random.experimental.stateless_fold_in(s, i) for i in range(2)]
        perm = _partners(fold[0], tf.shape(images)[0])
        lam = _beta(fold[1], alpha)
        return mix_pairs(images, perm, lam), mix_pairs(labels, perm, lam)

    return fn


@AUGMENTATIONS.register("cutmix", description="paste a box from another image", mixing=True)
@validated
def cutmix(alpha: Alpha = 1.0) -> MixFn:
    """CutMix (Yun et al. 2019), as in the paper's code: one box per batch.

    lam ~ Beta(alpha, alpha); cut = floor(H sqrt(1-lam)) x floor(W sqrt(1-lam)); a centre
    (cy, cx) uniform over the pixels; the box is rows [cy - cut_h//2, cy + cut_h//2) and the
    same for columns, clipped to the image. Image i gets image perm[i] inside the box, and
    labels lam' y_i + (1-lam') y_perm[i] with lam' = 1 - (box area) / (H W), the exact share of
    pixels it kept.
    """

    def fn(images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        s = stateless_seed(seed)
        fold = [tf.random.experimental.stateless_fold_in(s, i) for i in range(4)]
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        perm = _partners(fold[0], shape[0])
        ratio = tf.sqrt(1.0 - _beta(fold[1], alpha))
        sides = []
        for k, size in enumerate((height, width)):
            cut = tf.cast(tf.cast(size, tf.float32) * ratio, tf.int32)
            centre = tf.random.stateless_uniform([], seed=fold[2 + k], maxval=size, dtype=tf.int32)
            low = tf.clip_by_value(centre - cut // 2, 0, size)
            high = tf.clip_by_value(centre + cut // 2, 0, size)
            sides.append((low, high - low))
        (top, box_h), (left, box_w) = sides
        box = box_mask(height, width, *(tf.reshape(v, [1]) for v in (top, left, box_h, box_w)))
        images = tf.where(box[..., None], tf.gather(images, perm), images)
        lam = 1.0 - tf.cast(box_h * box_w, tf.float32) / tf.cast(height * width, tf.float32)
        return images, mix_pairs(labels, perm, lam)

    return fn
