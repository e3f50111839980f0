"""Network in Network (Lin, Chen and Yan, 2013): mlpconv blocks and global average pooling."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from dlintro.models.blocks import (
    Dropout,
    Positive,
    check_input,
    conv_block,
    probabilities,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated


def mlpconv(
    x: keras.KerasTensor, filters: Sequence[int], kernel_size: int, name: str
) -> keras.KerasTensor:
    """One convolution then 1x1 convolutions (a small MLP at every position), all ReLU."""
    for j, f in enumerate(filters, start=1):
        x = conv_block(x, f, kernel_size if j == 1 else 1, "relu", name=f"{name}_conv{j}")
    return x


@MODELS.register("nin", family="nin", description="Network in Network: mlpconv blocks, global pool")
@validated
def nin(
    input_shape: tuple[int, ...],
    num_classes: int,
    blocks: Sequence[Sequence[Positive]] = ((192, 160, 96), (192, 192, 192), (192, 192)),
    kernel_sizes: Sequence[Positive] = (5, 5, 3),
    dropout: Dropout = 0.5,
) -> keras.Model:
    """mlpconv blocks separated by 3x3 stride-2 pooling and dropout; no Dense layers.

    Defaults are the paper's CIFAR-10 network (its Caffe definition): 192@5x5, 160@1x1, 96@1x1,
    max-pool; 192@5x5, 192@1x1, 192@1x1, average-pool; 192@3x3, 192@1x1, and a last 1x1
    convolution to `num_classes` maps (ReLU, as published) whose global average is softmaxed.
    Dropout follows each pooling. The first pooling is max, later ones average; pools are SAME
    (Caffe rounds up: 32 -> 16 -> 8), so any input size works. 966,986 parameters for 10
    classes.
    """
    check_input(input_shape, num_classes, "nin")
    if not len(blocks) == len(kernel_sizes) >= 1 or not all(blocks):
        raise ValueError(
            "blocks (non-empty lists of filters) and kernel_sizes need the same length (>= 1). "
            f"Received: {[list(b) for b in blocks]}, {list(kernel_sizes)}"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, (filters, k) in enumerate(zip(blocks, kernel_sizes, strict=True), start=1):
        last = i == len(blocks)
        x = mlpconv(x, [*filters, num_classes] if last else filters, k, name=f"mlpconv{i}")
        if not last:
            pool = layers.MaxPooling2D if i == 1 else layers.AveragePooling2D
            x = pool(3, strides=2, padding="same", name=f"pool{i}")(x)
            if dropout > 0:
                x = layers.Dropout(dropout, name=f"pool{i}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = probabilities(x)
    return keras.Model(inputs, outputs, name="nin")
