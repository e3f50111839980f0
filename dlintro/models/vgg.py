"""VGG (Simonyan and Zisserman, 2014): stages of 3x3 convolutions, each ending in a 2x2 max-pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
from keras import layers

from dlintro.models.batchnorm import BatchNorm
from dlintro.models.blocks import (
    Dropout,
    Positive,
    check_input,
    check_min_size,
    classifier,
    conv_block,
    dense_block,
    probabilities,
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
    layout: Literal["dlintro", "torchvision"] = "dlintro",
) -> keras.Model:
    """3x3 SAME convolutions (ReLU) in stages, a 2x2 max-pool after each, then Dense layers.

    The defaults are configuration D (VGG-16) with the paper's head: FC 4096, 4096 with dropout
    0.5, then the classifier. With `batch_norm` each convolution is followed by batch norm before
    its ReLU and loses its bias (BN's offset takes its place); the Dense layers are unchanged.
    The input must survive one halving per stage: 32x32 for five stages.

    `layout: torchvision` builds torchvision's VGG as the CIFAR reproductions use it: every
    convolution keeps its bias (also before batch norm, which then has PyTorch's momentum 0.1
    and epsilon 1e-5), convolutions start He-normal (fan-out), Dense layers N(0, 0.01) with
    zero biases, and the head starts with a global average pool (AdaptiveAvgPool2d(1); on
    32x32 inputs the last map is 1x1, so it equals the flatten).
    """
    check_input(input_shape, num_classes, "vgg")
    if not stages or not all(stages):
        raise ValueError(f"stages needs at least one non-empty stage. Received: {stages}")
    windows = [(2, 2, "valid")] * len(stages)
    check_min_size(input_shape, windows, "vgg", f"{len(stages)} stages, each halving the input")

    torch = layout == "torchvision"
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, stage in enumerate(stages, start=1):
        for j, f in enumerate(stage, start=1):
            if torch:
                x = torch_conv(x, f, batch_norm, name=f"conv{i}_{j}")
            else:
                x = conv_block(x, f, 3, "relu", batch_norm=batch_norm, name=f"conv{i}_{j}")
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    if torch:
        x = layers.GlobalAveragePooling2D(name="avgpool")(x)
        for i, units in enumerate(dense, start=1):
            x = torch_dense(x, units, "relu", name=f"fc{i}")
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x) if dropout > 0 else x
        outputs = probabilities(torch_dense(x, num_classes, None, name="logits"))
        return keras.Model(inputs, outputs, name="vgg")
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(x, units, "relu", dropout=dropout, name=f"fc{i}")
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg")


def torch_conv(
    x: keras.KerasTensor, filters: int, batch_norm: bool, name: str
) -> keras.KerasTensor:
    """torchvision's VGG convolution: 3x3 with bias (He-normal fan-out), [BN], ReLU."""
    init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    x = layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name=name)(x)
    if batch_norm:  # PyTorch's BatchNorm2d: momentum 0.1 (Keras 0.9), epsilon 1e-5
        x = BatchNorm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def torch_dense(
    x: keras.KerasTensor, units: int, activation: str | None, name: str
) -> keras.KerasTensor:
    """torchvision's VGG Linear: N(0, 0.01) weights, zero bias; the logits in float32."""
    dtype = "float32" if activation is None else None
    init = keras.initializers.RandomNormal(stddev=0.01)
    x = layers.Dense(units, kernel_initializer=init, dtype=dtype, name=name)(x)
    return (
        x if activation is None else layers.Activation(activation, name=f"{name}_{activation}")(x)
    )


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


# huyvnphan/PyTorch_CIFAR10 (v3, January 2021; its README: vgg11_bn 92.39%, 28.150 M
# parameters; vgg16_bn 94.00%, 33.647 M): torchvision's VGG with batch norm after each
# convolution (which keeps its bias), AdaptiveAvgPool2d(1) and the FC 4096, 4096 head with
# dropout 0.5. Trainable parameters for 10 classes: 28,149,514 and 33,646,666 (PyTorch's
# count); Keras' count_params() adds BN's moving mean and variance (2 x 2,752 and 2 x 4,224).
variant(
    "vgg11_bn_cifar", "vgg", "VGG-11 + batch norm, torchvision head (huyvnphan, CIFAR-10)",
    stages=CONFIGURATIONS["A"], dense=(4096, 4096), batch_norm=True, layout="torchvision",
    params=("dropout",),
)  # fmt: skip
variant(
    "vgg16_bn_cifar", "vgg", "VGG-16 + batch norm, torchvision head (huyvnphan, CIFAR-10)",
    stages=CONFIGURATIONS["D"], dense=(4096, 4096), batch_norm=True, layout="torchvision",
    params=("dropout",),
)  # fmt: skip
