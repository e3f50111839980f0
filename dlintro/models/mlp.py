"""Fully connected models: softmax regression and multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

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
    dense_block,
)
from dlintro.models.registry import MODELS
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


variant = MODELS.register_variant
variant("softmax", "mlp", "784 -> 10 softmax regression", hidden=(), params=("kernel_stddev",))
variant("mlp5", "mlp", "the 5-layer 200-100-60-30 MLP", hidden=(200, 100, 60, 30))
variant("mlp_16x16", "mlp", "784-16-16-10 ReLU", hidden=(16, 16), activation="relu", params=())
variant(
    "keras_mlp", "mlp", "Dense 512 ReLU, dropout 0.2", hidden=(512,), activation="relu",
    dropout=0.2, params=("dropout",),
)  # fmt: skip
