"""VGG (Simonyan and Zisserman, 2014): stages of 3x3 convolutions, each ending in a 2x2 max-pool."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from dlintro.models.blocks import (
    Dropout,
    Positive,
    check_input,
    check_min_size,
    classifier,
    conv_block,
    dense_block,
)
from dlintro.models.registry import MODELS
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
# Parameters on 224x224x3 for 1000 classes (without batch norm): VGG-11 132,863,336,
# -13 133,047,848, -16 138,357,544, -19 143,667,240. vgg16_cifar: configuration D's 13
# convolutions with batch norm and a small head for 32x32 inputs (the last pool is 1x1x512):
# one FC 512 with dropout, then the classifier; 14,995,146 parameters for 10 classes
# (14,986,698 trainable).

KEEP = ("dropout", "batch_norm")  # the head's FC layers stay as the variant sets them
variant = MODELS.register_variant
variant("vgg11", "vgg", "VGG-11 (configuration A)", stages=CONFIGURATIONS["A"], params=KEEP)
variant("vgg13", "vgg", "VGG-13 (configuration B)", stages=CONFIGURATIONS["B"], params=KEEP)
variant("vgg16", "vgg", "VGG-16 (configuration D)", stages=CONFIGURATIONS["D"], params=KEEP)
variant("vgg19", "vgg", "VGG-19 (configuration E)", stages=CONFIGURATIONS["E"], params=KEEP)
variant(
    "vgg16_cifar", "vgg", "VGG-16 convs + batch norm, head 512 (32x32 inputs)",
    stages=CONFIGURATIONS["D"], dense=(512,), batch_norm=True, params=KEEP,
)  # fmt: skip
