"""Fully connected models: softmax regression and multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from dlintro.models import MODELS
from dlintro.models.blocks import (
    Activation,
    BiasInit,
    Dropout,
    KernelStd,
    Momentum,
    Positive,
    check_input,
    classifier,
    dense_block,
)
from dlintro.registry import validated


@MODELS.register("mlp", family="mlp", description="Flatten, hidden Dense layers, softmax")
@validated
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[Positive] = (200, 100, 60, 30),
    activation: Activation = "relu",
    dropout: Dropout = 0.0,
    batch_norm: bool = False,
    bn_scale: bool = True,
    bn_momentum: Momentum = 0.99,
    kernel_stddev: KernelStd = None,
    bias_init: BiasInit = 0.0,
) -> keras.Model:
    """A multi-layer perceptron; with `hidden=[]` it is softmax regression.

    With batch norm, each hidden Dense has no bias: BN's offset (initialized to `bias_init`)
    takes its place; `bn_scale: false` drops BN's scale, which a following ReLU does not need.
    """
    check_input(input_shape, num_classes, "mlp")
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden, start=1):
        x = dense_block(
            x,
            units,
            activation,
            batch_norm=batch_norm,
            bn_scale=bn_scale,
            bn_momentum=bn_momentum,
            dropout=dropout,
            kernel_stddev=kernel_stddev,
            bias_init=bias_init,
            name=f"dense{i}",
        )
    outputs = classifier(x, num_classes, kernel_stddev)
    return keras.Model(inputs, outputs, name="mlp")


@MODELS.register("softmax", family="mlp", description="784 -> 10 softmax regression")
@validated
def softmax(
    input_shape: tuple[int, ...], num_classes: int, kernel_stddev: KernelStd = None
) -> keras.Model:
    return mlp(input_shape, num_classes, hidden=(), kernel_stddev=kernel_stddev)


@MODELS.register("mlp5", family="mlp", description="the 5-layer 200-100-60-30 MLP")
@validated
def mlp5(
    input_shape: tuple[int, ...],
    num_classes: int,
    activation: Activation = "relu",
    dropout: Dropout = 0.0,
    batch_norm: bool = False,
    bn_scale: bool = True,
    bn_momentum: Momentum = 0.99,
    kernel_stddev: KernelStd = None,
    bias_init: BiasInit = 0.0,
) -> keras.Model:
    return mlp(
        input_shape, num_classes, (200, 100, 60, 30), activation, dropout, batch_norm,
        bn_scale, bn_momentum, kernel_stddev, bias_init,
    )  # fmt: skip


@MODELS.register("mlp_16x16", family="mlp", description="784-16-16-10 ReLU")
@validated
def mlp_16x16(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return mlp(input_shape, num_classes, hidden=(16, 16), activation="relu")


@MODELS.register("keras_mlp", family="mlp", description="Dense 512 ReLU, dropout 0.2")
@validated
def keras_mlp(
    input_shape: tuple[int, ...], num_classes: int, dropout: Dropout = 0.2
) -> keras.Model:
    return mlp(input_shape, num_classes, hidden=(512,), activation="relu", dropout=dropout)
