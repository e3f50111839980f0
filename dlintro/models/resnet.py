"""Residual networks (He et al., 2015, 2016): CIFAR, pre-activation and ImageNet ResNets.

The ImageNet networks follow torchvision's layout (stride in the bottleneck's 3x3, projection
shortcuts). Their published counts are trainable parameters; Keras' `count_params()` also counts
batch norm's moving mean and variance (2 x the BN channels), which PyTorch keeps as buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import keras
from keras import layers
from pydantic import Field

from dlintro.models.batchnorm import BatchNorm
from dlintro.models.blocks import Momentum, Positive, check_input, classifier
from dlintro.models.registry import MODELS
from dlintro.registry import validated

Shortcut = Literal["A", "B"]
Depth = Annotated[int, Field(ge=8, le=2000)]


@keras.saving.register_keras_serializable(package="dlintro")
class ShortcutPadding(layers.Layer):
    """Option A shortcut: keep every `strides`-th position, append zero channels up to `filters`.

    Parameter-free, as in He et al.'s CIFAR networks (fb.resnet.torch appends the zeros).
    """

    def __init__(self, filters: int, strides: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, inputs):
        from keras import ops

        s = self.strides
        x = inputs[:, ::s, ::s, :] if s > 1 else inputs
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.filters - int(inputs.shape[-1])]])

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.strides
        return (
            n,
            None if h is None else -(-h // s),
            None if w is None else -(-w // s),
            self.filters,
        )

    def get_config(self) -> dict:
        return super().get_config() | {"filters": self.filters, "strides": self.strides}


def conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    relu: bool = True,
    bn_momentum: float,
    name: str,
) -> keras.KerasTensor:
    """Conv2D without bias (He normal init) -> batch norm -> [ReLU]."""
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name,
    )(x)  # fmt: skip
    x = batch_norm(x, bn_momentum, f"{name}_bn")
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def batch_norm(x: keras.KerasTensor, momentum: float, name: str) -> keras.KerasTensor:
    return BatchNorm(momentum=momentum, epsilon=1e-5, name=name)(x)


def shortcut(
    x: keras.KerasTensor, filters: int, strides: int, option: str, bn_momentum: float, name: str
) -> keras.KerasTensor:
    """Identity when the shape is kept; else option A (zero padding) or B (1x1 conv + BN)."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    if option == "A":
        return ShortcutPadding(filters, strides, name=name)(x)
    return conv_bn(x, filters, 1, strides=strides, relu=False, bn_momentum=bn_momentum, name=name)


def basic_block(
    x: keras.KerasTensor, filters: int, strides: int, option: str, bn_momentum: float, name: str
) -> keras.KerasTensor:
    """3x3 conv-BN-ReLU, 3x3 conv-BN, add the shortcut, ReLU."""
    y = conv_bn(x, filters, 3, strides=strides, bn_momentum=bn_momentum, name=f"{name}_conv1")
    y = conv_bn(y, filters, 3, relu=False, bn_momentum=bn_momentum, name=f"{name}_conv2")
    s = shortcut(x, filters, strides, option, bn_momentum, f"{name}_shortcut")
    y = layers.Add(name=f"{name}_add")([y, s])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def bottleneck_block(
    x: keras.KerasTensor, width: int, strides: int, option: str, bn_momentum: float, name: str
) -> keras.KerasTensor:
    """1x1 conv to `width`, 3x3 conv (with the stride, as torchvision), 1x1 conv to 4 x width."""
    y = conv_bn(x, width, 1, bn_momentum=bn_momentum, name=f"{name}_conv1")
    y = conv_bn(y, width, 3, strides=strides, bn_momentum=bn_momentum, name=f"{name}_conv2")
    y = conv_bn(y, 4 * width, 1, relu=False, bn_momentum=bn_momentum, name=f"{name}_conv3")
    s = shortcut(x, 4 * width, strides, option, bn_momentum, f"{name}_shortcut")
    y = layers.Add(name=f"{name}_add")([y, s])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def preact_bottleneck_block(
    x: keras.KerasTensor, width: int, strides: int, bn_momentum: float, name: str
) -> keras.KerasTensor:
    """BN-ReLU-1x1 (with the stride), BN-ReLU-3x3, BN-ReLU-1x1 to 4 x width, plus the shortcut.

    As in the authors' code (resnet-1k-layers): when the shape changes, the shortcut is a 1x1
    projection of the pre-activated input, which both branches share.
    """

    def pre(t: keras.KerasTensor, suffix: str) -> keras.KerasTensor:
        t = batch_norm(t, bn_momentum, f"{name}_{suffix}_bn")
        return layers.Activation("relu", name=f"{name}_{suffix}_relu")(t)

    def conv(
        t: keras.KerasTensor, filters: int, k: int, suffix: str, s: int = 1
    ) -> keras.KerasTensor:
        return layers.Conv2D(
            filters, k, strides=s, padding="same", use_bias=False,
            kernel_initializer="he_normal", name=f"{name}_{suffix}",
        )(t)  # fmt: skip

    project = strides != 1 or x.shape[-1] != 4 * width
    a = pre(x, "preact")
    y = conv(a, width, 1, "conv1", strides)
    y = conv(pre(y, "conv1"), width, 3, "conv2")
    y = conv(pre(y, "conv2"), 4 * width, 1, "conv3")
    s = conv(a, 4 * width, 1, "shortcut", strides) if project else x
    return layers.Add(name=f"{name}_add")([y, s])


@MODELS.register("resnet", family="resnet", description="ResNet: residual stages, global pool")
@validated
def resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    block: Literal["basic", "bottleneck"] = "bottleneck",
    stage_blocks: Sequence[Positive] = (3, 4, 6, 3),
    widths: Sequence[Positive] = (64, 128, 256, 512),
    stem: Literal["imagenet", "cifar"] = "imagenet",
    shortcut: Shortcut = "B",
    bn_momentum: Momentum = 0.9,
) -> keras.Model:
    """Post-activation ResNet: a stem, stages of residual blocks, global pooling, classifier.

    The first block of every stage after the first halves the size (stride 2).
    Stems: "imagenet" is 64@7x7 stride 2 + BN + ReLU + 3x3 stride-2 max-pool; "cifar" is
    `widths[0]`@3x3 + BN + ReLU. Bottleneck blocks output 4 x width channels. Shortcuts change
    shape by option A (subsample and zero-pad channels, no parameters) or B (1x1 conv + BN).
    Every convolution has no bias and is followed by batch norm (epsilon 1e-5; momentum 0.9 is
    PyTorch's 0.1). SAME padding throughout, so any input size works. Defaults: ResNet-50.
    """
    check_input(input_shape, num_classes, "resnet")
    if not len(stage_blocks) == len(widths) >= 1:
        raise ValueError(
            "stage_blocks and widths need the same length (>= 1). "
            f"Received: {list(stage_blocks)}, {list(widths)}"
        )
    make_block = basic_block if block == "basic" else bottleneck_block
    inputs = keras.Input(shape=input_shape, name="images")
    if stem == "imagenet":
        x = conv_bn(inputs, 64, 7, strides=2, bn_momentum=bn_momentum, name="conv1")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:
        x = conv_bn(inputs, widths[0], 3, bn_momentum=bn_momentum, name="conv1")
    for i, (blocks, width) in enumerate(zip(stage_blocks, widths, strict=True), start=1):
        for j in range(1, blocks + 1):
            strides = 2 if i > 1 and j == 1 else 1
            x = make_block(x, width, strides, shortcut, bn_momentum, f"stage{i}_block{j}")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="resnet")


@MODELS.register("resnet_cifar", family="resnet", description="CIFAR ResNet, depth 6n+2")
@validated
def resnet_cifar(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: Depth = 20,
    shortcut: Shortcut = "A",
    bn_momentum: Momentum = 0.9,
) -> keras.Model:
    """He et al.'s CIFAR ResNet of depth 6n + 2 (20, 32, 44, 56, 110, ...).

    16@3x3, three stages of n basic blocks of 16, 32, 64 filters (maps of 32, 16, 8 on CIFAR),
    global average pooling, classifier.

    Option A shortcuts by default (parameter-free, as the paper's CIFAR experiments). Counts
    for 10 classes, total (trainable + BN moving statistics) / trainable:
    ResNet-20 271,098 / 269,722; -32 466,426 / 464,154; -44 661,754 / 658,586;
    -56 857,082 / 853,018; -110 1,736,058 / 1,727,962.
    """
    if (depth - 2) % 6:
        raise ValueError(
            f"resnet_cifar depth must be 6n+2 (20, 32, 44, 56, 110...). Received: depth={depth}"
        )
    n = (depth - 2) // 6
    return resnet(
        input_shape, num_classes, "basic", (n, n, n), (16, 32, 64), "cifar", shortcut, bn_momentum
    )


@MODELS.register(
    "preact_resnet_cifar", family="resnet", description="pre-activation bottleneck ResNet, 9n+2"
)
@validated
def preact_resnet_cifar(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: Depth = 164,
    bn_momentum: Momentum = 0.9,
) -> keras.Model:
    """Pre-activation bottleneck ResNet of depth 9n + 2 (He et al., 2016, "Identity Mappings").

    16@3x3, three stages of n pre-activation bottleneck blocks of widths 16, 32, 64 (outputs
    64, 128, 256), final BN + ReLU, global average pooling, classifier. As in the authors'
    code, the stride sits in each block's first 1x1 convolution and shortcuts are 1x1
    projections where the shape changes. ResNet-164 for 10 classes: 1,727,482 parameters
    (1,703,258 trainable).
    """
    if (depth - 2) % 9:
        raise ValueError(
            f"preact_resnet_cifar depth must be 9n+2 (164, 1001...). Received: depth={depth}"
        )
    check_input(input_shape, num_classes, "preact_resnet_cifar")
    n = (depth - 2) // 9
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(
        16, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="conv1"
    )(inputs)
    for i, width in enumerate((16, 32, 64), start=1):
        for j in range(1, n + 1):
            strides = 2 if i > 1 and j == 1 else 1
            x = preact_bottleneck_block(x, width, strides, bn_momentum, f"stage{i}_block{j}")
    x = batch_norm(x, bn_momentum, "final_bn")
    x = layers.Activation("relu", name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="preact_resnet_cifar")


# ----------------------------------------------------------------------------- named variants
# CIFAR counts: see resnet_cifar's and preact_resnet_cifar's docstrings. ImageNet, trainable
# parameters on 224x224x3 for 1000 classes (torchvision's counts): ResNet-18 11,689,512,
# -34 21,797,672, -50 25,557,032, -152 60,192,808.

variant = MODELS.register_variant
variant("resnet20", "resnet_cifar", "CIFAR ResNet-20 (0.27M)", depth=20, params=("shortcut",))
variant("resnet32", "resnet_cifar", "CIFAR ResNet-32 (0.46M)", depth=32, params=("shortcut",))
variant("resnet44", "resnet_cifar", "CIFAR ResNet-44 (0.66M)", depth=44, params=("shortcut",))
variant("resnet56", "resnet_cifar", "CIFAR ResNet-56 (0.85M)", depth=56, params=("shortcut",))
variant("resnet110", "resnet_cifar", "CIFAR ResNet-110 (1.7M)", depth=110, params=("shortcut",))
variant("preact_resnet164", "preact_resnet_cifar", "pre-activation ResNet-164 (1.7M)", depth=164,
        params=())  # fmt: skip
BASIC, BOTTLENECK = "ImageNet ResNet-{} (basic blocks)", "ImageNet ResNet-{} (bottlenecks)"
variant("resnet18", "resnet", BASIC.format(18), block="basic", stage_blocks=(2, 2, 2, 2), params=())
variant("resnet34", "resnet", BASIC.format(34), block="basic", stage_blocks=(3, 4, 6, 3), params=())
# block: the base's default, "bottleneck"
variant("resnet50", "resnet", BOTTLENECK.format(50), stage_blocks=(3, 4, 6, 3), params=())
variant("resnet152", "resnet", BOTTLENECK.format(152), stage_blocks=(3, 8, 36, 3), params=())
