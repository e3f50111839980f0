"""Small convnets: strided conv stacks (no pooling) and plain conv-pool stacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
from keras import layers

from dlintro.models.blocks import (
    Activation,
    BiasInit,
    Dropout,
    KernelStd,
    Momentum,
    Positive,
    check_input,
    classifier,
    conv_block,
    dense_block,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated


@MODELS.register("strided_convnet", family="convnets", description="strided convs, dense, softmax")
@validated
def strided_convnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Sequence[Positive] = (4, 8, 12),
    kernel_sizes: Sequence[Positive] = (5, 5, 4),
    strides: Sequence[Positive] = (1, 2, 2),
    dense: Positive = 200,
    dropout: Dropout = 0.0,
    batch_norm: bool = False,
    bn_scale: bool = True,
    bn_momentum: Momentum = 0.99,
    activation: Activation = "relu",
    kernel_stddev: KernelStd = None,
    bias_init: BiasInit = 0.0,
) -> keras.Model:
    """Convolutions that downsample by stride (SAME padding), one hidden Dense, softmax.

    With batch norm, BN's offset (initialized to `bias_init`) replaces each layer's bias.
    """
    check_input(input_shape, num_classes, "strided_convnet")
    if not len(filters) == len(kernel_sizes) == len(strides) >= 1:
        raise ValueError(
            "filters, kernel_sizes and strides need the same length (>= 1). Received: "
            f"{list(filters)}, {list(kernel_sizes)}, {list(strides)}"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, (f, k, s) in enumerate(zip(filters, kernel_sizes, strides, strict=True), start=1):
        x = conv_block(
            x, f, k, activation, strides=s, batch_norm=batch_norm, bn_scale=bn_scale,
            bn_momentum=bn_momentum, kernel_stddev=kernel_stddev, bias_init=bias_init,
            name=f"conv{i}",
        )  # fmt: skip
    x = layers.Flatten(name="flatten")(x)
    x = dense_block(
        x, dense, activation, batch_norm=batch_norm, bn_scale=bn_scale, bn_momentum=bn_momentum,
        dropout=dropout, kernel_stddev=kernel_stddev, bias_init=bias_init, name="dense",
    )  # fmt: skip
    outputs = classifier(x, num_classes, kernel_stddev, bias_init)
    return keras.Model(inputs, outputs, name="strided_convnet")


@MODELS.register("plain_convnet", family="convnets", description="conv stages with max-pool")
@validated
def plain_convnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    stages: Sequence[Sequence[Positive]] = ((32, 32),),
    kernel_size: Positive = 3,
    padding: Literal["same", "valid"] = "same",
    pool_size: Positive = 2,
    dense: Sequence[Positive] = (256,),
    conv_dropout: Dropout = 0.0,
    dense_dropout: Dropout = 0.0,
    batch_norm: bool = False,
    activation: Activation = "relu",
    kernel_stddev: KernelStd = None,
    bias_init: BiasInit = 0.0,
) -> keras.Model:
    """Stages of convolutions each ending in max-pooling (and dropout), then Dense layers."""
    check_input(input_shape, num_classes, "plain_convnet")
    if not stages or not all(stages):
        raise ValueError(f"stages needs at least one non-empty stage. Received: {stages}")
    size = min(input_shape[:2])
    for stage in stages:
        size = (size - (kernel_size - 1) * len(stage) if padding == "valid" else size) // pool_size
        if size < 1:
            raise ValueError(
                f"input {tuple(input_shape)} is too small for {len(stages)} stages of "
                f"{kernel_size}x{kernel_size} {padding} convolutions and {pool_size}x{pool_size} "
                "pooling; use a larger input or fewer stages"
            )
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, stage in enumerate(stages, start=1):
        for j, f in enumerate(stage, start=1):
            x = conv_block(
                x, f, kernel_size, activation, padding=padding, batch_norm=batch_norm,
                kernel_stddev=kernel_stddev, bias_init=bias_init, name=f"conv{i}_{j}",
            )  # fmt: skip
        x = layers.MaxPooling2D(pool_size, name=f"pool{i}")(x)
        if conv_dropout > 0:
            x = layers.Dropout(conv_dropout, name=f"pool{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(
            x, units, activation, batch_norm=batch_norm, dropout=dense_dropout,
            kernel_stddev=kernel_stddev, bias_init=bias_init, name=f"dense{i}",
        )  # fmt: skip
    outputs = classifier(x, num_classes, kernel_stddev, bias_init)
    return keras.Model(inputs, outputs, name="plain_convnet")


# ----------------------------------------------------------------------------- named variants


GORNER = ("dropout", "kernel_stddev", "bias_init")  # what the Gorner variants keep configurable
variant = MODELS.register_variant
variant(
    "gorner_conv", "strided_convnet", "conv 4-8-12 strided, dense 200",
    filters=(4, 8, 12), kernel_sizes=(5, 5, 4), strides=(1, 2, 2), dense=200, params=GORNER,
)  # fmt: skip
variant(
    "gorner_conv_big", "strided_convnet", "conv 6-12-24 strided",
    filters=(6, 12, 24), kernel_sizes=(6, 5, 4), strides=(1, 2, 2), dense=200, dropout=0.25,
    params=GORNER,
)  # fmt: skip
variant(
    "gorner_conv_bn", "strided_convnet", "conv 24-48-64 + batch norm",
    filters=(24, 48, 64), kernel_sizes=(6, 5, 4), strides=(1, 2, 2), dense=200, batch_norm=True,
    dropout=0.25, bn_scale=False, bn_momentum=0.999, bias_init=0.1,
    params=("dropout", "bn_scale", "bn_momentum", "kernel_stddev", "bias_init"),
)  # fmt: skip


# keras_cnn, tf_deep and keras_cifar_conv map one `dropout` onto plain_convnet's two: builders.


@MODELS.register("keras_cnn", family="convnets", description="Keras MNIST CNN: 2 conv, dense 256")
@validated
def keras_cnn(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.25
) -> keras.Model:
    return plain_convnet(
        input_shape, num_classes, ((32, 32),), 3, "valid", 2, (256,), dropout, dropout
    )


@MODELS.register("tf_deep", family="convnets", description="TF 'Deep MNIST': 5x5 32-64, fc 1024")
@validated
def tf_deep(
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: Dropout = 0.5,
    kernel_stddev: KernelStd = 0.1,
    bias_init: BiasInit = 0.1,
) -> keras.Model:
    return plain_convnet(
        input_shape, num_classes, ((32,), (64,)), 5, "same", 2, (1024,), 0.0, dropout,
        kernel_stddev=kernel_stddev, bias_init=bias_init,
    )  # fmt: skip


@MODELS.register("keras_cifar_conv", family="convnets", description="conv 16-32 / 32-64, dense 256")
@validated
def keras_cifar_conv(
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: Dropout = 0.0,
    dense_dropout: Dropout | None = None,
) -> keras.Model:
    """`dropout` after each pooling and after the dense layer; `dense_dropout`, when set,
    replaces it after the dense layer (RStudio's Keras example: 0.25, 0.25, then 0.5)."""
    dense = dropout if dense_dropout is None else dense_dropout
    return plain_convnet(
        input_shape, num_classes, ((16, 32), (32, 64)), 3, "same", 2, (256,), dropout, dense
    )
