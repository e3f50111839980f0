"""Datasets without files: `synthetic` (generated, for tests and smoke runs) and `imagenet`
(ImageNet's shapes only, for `dlintro summary` of the reference architectures).
"""

import functools
from pathlib import Path
from typing import Annotated

import numpy as np
import pydantic

from dlintro.data.sources import DATASETS, Arrays, DatasetInfo, readonly_arrays
from dlintro.errors import UserError
from dlintro.registry import validated

Count = Annotated[int, pydantic.Field(ge=1, le=1_000_000)]
MAX_SYNTHETIC_BYTES = 1 << 30


def synthetic_info(
    num_train: int = 256,
    num_test: int = 64,
    image_size: int = 28,
    channels: int = 1,
    num_classes: int = 10,
) -> DatasetInfo:
    """The DatasetInfo of `synthetic` for these parameters."""
    return DatasetInfo(
        name="synthetic",
        description="generated images, one bright patch per class (tests, smoke runs)",
        input_shape=(image_size, image_size, channels),
        num_classes=num_classes,
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
        files=(),
        mirrors=(),
        num_train=num_train,
        num_test=num_test,
    )


def _synthetic_split(n: int, size: int, channels: int, classes: int, seed: int) -> tuple:
    """Noise plus a bright square whose grid position encodes the class; learnable in steps."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.uint8)
    x = rng.integers(0, 64, size=(n, size, size, channels), dtype=np.uint8)
    grid = int(np.ceil(np.sqrt(classes)))
    cell = size // grid
    for c in range(classes):
        r, q = divmod(c, grid)
        x[y == c, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell, :] += 160
    return x, y


@functools.lru_cache(maxsize=8)
def _synthetic_arrays(
    num_train: int, num_test: int, image_size: int, channels: int, num_classes: int
) -> Arrays:
    train = _synthetic_split(num_train, image_size, channels, num_classes, seed=1234)
    test = _synthetic_split(num_test, image_size, channels, num_classes, seed=5678)
    return readonly_arrays(*train, *test)


@DATASETS.register(
    "synthetic", info=synthetic_info(), info_for=synthetic_info, files="generated (no files)"
)
@validated
def synthetic(
    root: Path,
    num_train: Count = 256,
    num_test: Count = 64,
    image_size: Annotated[int, pydantic.Field(ge=4, le=512)] = 28,
    channels: Annotated[int, pydantic.Field(ge=1, le=4)] = 1,
    num_classes: Annotated[int, pydantic.Field(ge=2, le=256)] = 10,
) -> Arrays:
    """A deterministic generated dataset needing no files; `root` is ignored."""
    grid = int(np.ceil(np.sqrt(num_classes)))
    if image_size < grid:
        raise UserError(
            f"synthetic: image_size {image_size} is too small for {num_classes} classes "
            f"(needs at least {grid})"
        )
    if (num_train + num_test) * image_size * image_size * channels > MAX_SYNTHETIC_BYTES:
        raise UserError("synthetic: more than 1 GiB of images requested; use smaller params")
    return _synthetic_arrays(num_train, num_test, image_size, channels, num_classes)


ImageSize = Annotated[int, pydantic.Field(ge=32, le=1024)]


def imagenet_info(image_size: ImageSize = 224) -> DatasetInfo:
    """ImageNet's shapes at `image_size` (224; the tabled AlexNet wants 227)."""
    return DatasetInfo(
        name="imagenet",
        description=f"ImageNet ILSVRC-2012 shapes only ({image_size}x{image_size}x3, 1000 "
        "classes) for `dlintro summary`",
        input_shape=(image_size, image_size, 3),
        num_classes=1000,
        class_names=tuple(f"n{i}" for i in range(1000)),
        files=(),
        mirrors=(),
        num_train=1281167,
        num_test=50000,
    )


IMAGENET_INFO = imagenet_info()


@DATASETS.register(
    "imagenet", info=IMAGENET_INFO, info_for=imagenet_info, files="shapes only (for summary)"
)
@validated
def imagenet(root: Path, image_size: ImageSize = 224) -> Arrays:
    """Describes ImageNet's shapes; loading it is refused (no automatic download exists)."""
    raise UserError(
        "ImageNet cannot be downloaded automatically; the imagenet_* configs are reference "
        "architectures for `dlintro summary`; to train, use dataset image_folder with your copy"
    )


__all__ = ["IMAGENET_INFO", "imagenet_info", "synthetic_info"]
