"""VGG (Simonyan and Zisserman, 2014): stages of 3x3 convolutions, each ending in a 2x2 max-pool."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from dlintro.models import MODELS
from dlintro.models.blocks import (
    Dropout,
    Positive,
    check_input,
    check_min_size,
    classifier,
    conv_block,
    dense_block,
)
from dlintro.registry import validated

# The paper's configurations: filters of each 3x3 convolution, stage by stage.
CONFIGURATIONS = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


@MODELS.register("vgg", family="vgg", description="VGG: 3x3 conv stages with max-pool, FC head")
@validated
def vgg(
    input_shape: tuple[int, ...],
    num_classes: int,
    stages: Sequence[Sequence[Positive]] = CONFIGURATIONS["D"],
    dense: Sequence[Positive] = (4096, 4096),
    dropout: Dropout = 0.5,
    batch_norm: bool = False,
) -> keras.Model:
    """3x3 SAME convolutions (ReLU) in stages, a 2x2 max-pool after each, then Dense layers.

    The defaults are configuration D (VGG-16) with the paper's head: FC 4096, 4096 with dropout
    0.5, then the classifier. With `batch_norm` each convolution is followed by batch norm before
    its ReLU and loses its bias (BN's offset takes its place); the Dense layers are unchanged.
    The input must survive one halving per stage: 32x32 for five stages.
    """
    check_input(input_shape, num_classes, "vgg")
    if not stages or not all(stages):
        raise ValueError(f"stages needs at least one non-empty stage. Received: {stages}")
    windows = [(2, 2, "valid")] * len(stages)
    check_min_size(input_shape, windows, "vgg", f"{len(stages)} stages, each halving the input")

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, stage in enumerate(stages, start=1):
        for j, f in enumerate(stage, start=1):
            x = conv_block(x, f, 3, "relu", batch_norm=batch_norm, name=f"conv{i}_{j}")
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(x, units, "relu", dropout=dropout, name=f"fc{i}")
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg")


# ----------------------------------------------------------------------------- named variants
# `batch_norm: true` gives the BN versions (torchvision's vgg11_bn ...), without conv biases.


@MODELS.register("vgg11", family="vgg", description="VGG-11 (configuration A)")
@validated
def vgg11(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.5, batch_norm: bool = False
) -> keras.Model:
    """132,863,336 parameters on 224x224x3 for 1000 classes (without batch norm)."""
    return vgg(input_shape, num_classes, CONFIGURATIONS["A"], (4096, 4096), dropout, batch_norm)


@MODELS.register("vgg13", family="vgg", description="VGG-13 (configuration B)")
@validated
def vgg13(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.5, batch_norm: bool = False
) -> keras.Model:
    """133,047,848 parameters on 224x224x3 for 1000 classes (without batch norm)."""
    return vgg(input_shape, num_classes, CONFIGURATIONS["B"], (4096, 4096), dropout, batch_norm)


@MODELS.register("vgg16", family="vgg", description="VGG-16 (configuration D)")
@validated
def vgg16(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.5, batch_norm: bool = False
) -> keras.Model:
    """138,357,544 parameters on 224x224x3 for 1000 classes (without batch norm)."""
    return vgg(input_shape, num_classes, CONFIGURATIONS["D"], (4096, 4096), dropout, batch_norm)


@MODELS.register("vgg19", family="vgg", description="VGG-19 (configuration E)")
@validated
def vgg19(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.5, batch_norm: bool = False
) -> keras.Model:
    """143,667,240 parameters on 224x224x3 for 1000 classes (without batch norm)."""
    return vgg(input_shape, num_classes, CONFIGURATIONS["E"], (4096, 4096), dropout, batch_norm)


@MODELS.register(
    "vgg16_cifar", family="vgg", description="VGG-16 convs + batch norm, head 512 (32x32 inputs)"
)
@validated
def vgg16_cifar(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.5, batch_norm: bool = True
) -> keras.Model:
    """Configuration D's 13 convolutions with batch norm, and a small head for 32x32 inputs.

    On 32x32 the last pool is 1x1x512, so the head is one FC 512 with dropout, then the
    classifier: 14,995,146 parameters for 10 classes (14,986,698 trainable).
    """
    return vgg(input_shape, num_classes, CONFIGURATIONS["D"], (512,), dropout, batch_norm)
