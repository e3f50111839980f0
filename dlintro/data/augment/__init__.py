"""Training-time augmentations, applied to whole float batches (pixels 0..255) in tf.data.

The registry and the composition live in `registry`, the shared stateless image ops in `ops`,
the augmentations in `image` (per image) and `mixing` (mixup, cutmix: pairs of examples, so
labels too); importing this package registers them all. TensorFlow is imported only inside
functions.
"""

from dlintro.data.augment import image, mixing  # noqa: F401  (register the augmentations)
from dlintro.data.augment.registry import (
    AUGMENTATIONS,
    AugmentFn,
    Examples,
    MixFn,
    is_mixing,
    make_augmenter,
    make_mixer,
)

__all__ = [
    "AUGMENTATIONS", "AugmentFn", "Examples", "MixFn", "is_mixing", "make_augmenter", "make_mixer",
]  # fmt: skip
