"""The CIFAR-10 speed-run network: airbench94's shape (Keller Jordan, 2024), and with `depth: 3`
airbench96's, built from dlintro's blocks; the recipes around it are configs/cifar10_fast.yaml
and configs/cifar10_fast96.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import keras
from keras import layers
from pydantic import Field

from dlintro.models.batchnorm import BatchNorm
from dlintro.models.blocks import (
    Activation,
    InitName,
    Momentum,
    PatchWhitening,
    Positive,
    check_input,
    check_min_size,
    initializer,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated


@MODELS.register(
    "cifar_speednet", family="speednet",
    description="airbench-like: patch whitening, 3 conv-pool-BN blocks, scaled logits",
)  # fmt: skip
@validated
def cifar_speednet(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: Annotated[Sequence[Positive], Field(min_length=1, max_length=6)] = (64, 256, 256),
    depth: Literal[2, 3] = 2,
    whiten_patch: Annotated[int, Field(ge=1, le=4)] = 2,
    whiten_eps: Annotated[float, Field(gt=0.0, le=1.0)] = 5e-4,
    whiten_bias: bool = True,
    bn_momentum: Momentum = 0.6,
    bn_epsilon: Annotated[float, Field(gt=0.0, le=0.1)] = 1e-5,
    conv_init: InitName = "dirac",
    activation: Activation = "gelu",
    logit_scale: Annotated[float, Field(gt=0.0, le=100.0)] = 1 / 9,
) -> keras.Model:
    """Patch whitening -> activation, then per width w a block: 3x3 conv w (no bias) ->
    max-pool 2 -> batch norm -> activation -> 3x3 conv w -> batch norm -> activation; then
    global max-pool, a bias-free dense layer to the classes, x logit_scale, softmax. With
    `depth: 3` (airbench96) each block has a third 3x3 conv w -> batch norm, and the output
    of the first activation is added back before the last activation (a residual over the
    second and third convs).

    The first layer is a frozen `PatchWhitening` of whiten_patch x whiten_patch patches
    (2 x patch^2 x channels filters, "valid"; its kernel is set from the training images by
    dlintro.models.datainit). Batch norm learns offsets only (scale frozen at 1, Keras
    `scale=False`); convolutions start as identities (`conv_init: dirac`). With the defaults
    on 32x32x3: 31 -> 15 -> 7 -> 3 -> 1 pixels, as airbench94's MaxPool(3) at the end.
    Airbench's differences: its batch norm epsilon is 1e-12. Airbench trains the whitening
    bias ("whiten/bias") for 3 epochs only: a config does that with an optimizer group,
    `{match: "^whiten/bias$", until_epoch: 3}` (configs/cifar10_fast.yaml); the builder knows
    nothing of training.
    """
    check_input(input_shape, num_classes, "cifar_speednet")
    windows = [(whiten_patch, 1, "valid")] + [(2, 2, "valid")] * len(widths)
    why = f"a {whiten_patch}x{whiten_patch} whitening and {len(widths)} max-pools"
    check_min_size(input_shape, windows, "cifar_speednet", why)
    channels = int(input_shape[-1])
    inputs = keras.Input(shape=input_shape, name="images")
    x = PatchWhitening(
        2 * whiten_patch * whiten_patch * channels, whiten_patch, whiten_eps,
        use_bias=whiten_bias, name="whiten",
    )(inputs)  # fmt: skip
    x = layers.Activation(activation, name=f"whiten_{activation}")(x)
    for i, width in enumerate(widths, start=1):
        shortcut = None
        for j in range(1, depth + 1):
            name = f"block{i}_conv{j}"
            x = layers.Conv2D(
                width, 3, padding="same", use_bias=False,
                kernel_initializer=initializer(conv_init), name=name,
            )(x)  # fmt: skip
            if j == 1:
                x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
            x = BatchNorm(
                momentum=bn_momentum, epsilon=bn_epsilon, scale=False, name=f"block{i}_bn{j}"
            )(x)
            if j == 3:
                x = layers.Add(name=f"block{i}_residual")([x, shortcut])
            x = layers.Activation(activation, name=f"{name}_{activation}")(x)
            if j == 1 and depth == 3:
                shortcut = x
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(num_classes, use_bias=False, dtype="float32", name="logits")(x)
    x = layers.Rescaling(logit_scale, dtype="float32", name="logit_scale")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cifar_speednet")
