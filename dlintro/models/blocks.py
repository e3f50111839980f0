"""Layer blocks and argument types shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import keras
from keras import layers
from pydantic import Field

# Parameter types for builder signatures: the registry validates config values against them.
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Positive = Annotated[int, Field(ge=1)]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "gelu", "swish", "linear"]
KernelStd = Annotated[float, Field(gt=0.0, le=10.0)] | None
BiasInit = Annotated[float, Field(ge=-10.0, le=10.0)]
Momentum = Annotated[float, Field(ge=0.0, lt=1.0)]


def batch_norm_layer(name: str, scale: bool, momentum: float, offset: float) -> layers.Layer:
    """Batch norm whose offset (beta) replaces the preceding layer's bias, as in the BN paper."""
    return layers.BatchNormalization(
        momentum=momentum,
        scale=scale,
        beta_initializer=keras.initializers.Constant(offset),
        name=name,
    )


def kernel_initializer(stddev: float | None, seed: int | None = None) -> keras.Initializer | str:
    """Keras' default (Glorot uniform), or the truncated normal of the published recipes."""
    if stddev is None:
        return "glorot_uniform"
    return keras.initializers.TruncatedNormal(stddev=stddev, seed=seed)


def check_input(input_shape: Sequence[int], num_classes: int, model: str) -> None:
    """Reject shapes and class counts no image classifier can serve."""
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(
            f"{model} needs an image input (height, width, channels). Received: {input_shape}"
        )
    if num_classes < 2:
        raise ValueError(f"{model} needs at least 2 classes. Received: num_classes={num_classes}")


def dense_block(
    x: keras.KerasTensor,
    units: int,
    activation: str,
    *,
    batch_norm: bool = False,
    bn_scale: bool = True,
    bn_momentum: float = 0.99,
    dropout: float = 0.0,
    kernel_stddev: float | None = None,
    bias_init: float = 0.0,
    name: str,
) -> keras.KerasTensor:
    """Dense -> [batch norm] -> activation -> [dropout]; with batch norm the bias is BN's offset."""
    x = layers.Dense(
        units,
        use_bias=not batch_norm,
        kernel_initializer=kernel_initializer(kernel_stddev),
        bias_initializer=keras.initializers.Constant(bias_init),
        name=name,
    )(x)
    if batch_norm:
        x = batch_norm_layer(f"{name}_bn", bn_scale, bn_momentum, bias_init)(x)
    x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def conv_block(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    activation: str,
    *,
    strides: int = 1,
    padding: str = "same",
    batch_norm: bool = False,
    bn_scale: bool = True,
    bn_momentum: float = 0.99,
    kernel_stddev: float | None = None,
    bias_init: float = 0.0,
    name: str,
) -> keras.KerasTensor:
    """Conv2D -> [batch norm] -> activation; with batch norm the bias is BN's offset."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        kernel_initializer=kernel_initializer(kernel_stddev),
        bias_initializer=keras.initializers.Constant(bias_init),
        name=name,
    )(x)
    if batch_norm:
        x = batch_norm_layer(f"{name}_bn", bn_scale, bn_momentum, bias_init)(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def classifier(
    x: keras.KerasTensor, num_classes: int, kernel_stddev: float | None = None, bias_init=0.0
) -> keras.KerasTensor:
    """The output layer: Dense to class scores, softmax kept in float32 for mixed precision."""
    x = layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer(kernel_stddev),
        bias_initializer=keras.initializers.Constant(bias_init),
        name="logits",
    )(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)
