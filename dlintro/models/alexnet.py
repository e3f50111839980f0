"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) as a single tower, and a CIFAR-sized variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
from keras import layers

from dlintro.models.blocks import (
    Dropout,
    LocalResponseNormalization,
    Positive,
    check_input,
    check_min_size,
    classifier,
    conv_block,
    dense_block,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated


@MODELS.register("alexnet", family="alexnet", description="AlexNet single tower, 227x227 input")
@validated
def alexnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Sequence[Positive] = (96, 256, 384, 384, 256),
    kernel_sizes: Sequence[Positive] = (11, 5, 3, 3, 3),
    strides: Sequence[Positive] = (4, 1, 1, 1, 1),
    first_padding: Literal["same", "valid"] = "valid",
    pool_after: Sequence[Positive] = (1, 2, 5),
    dense: Sequence[Positive] = (4096, 4096),
    dropout: Dropout = 0.5,
    lrn: bool = False,
) -> keras.Model:
    """Convolutions (ReLU), overlapping 3x3 stride-2 max-pools, Dense layers with dropout.

    Defaults are the single-tower network as tabled: 96@11x11 stride 4 (valid), max-pool,
    256@5x5, max-pool, 384@3x3, 384@3x3, 256@3x3, max-pool (later convolutions SAME), FC 4096,
    4096 and the classifier, dropout 0.5 after each hidden FC. On 227x227x3 the last pool is
    6x6x256 and the model has 62,378,344 parameters for 1000 classes. `pool_after` lists the
    convolutions (1-based) followed by a max-pool. `lrn` adds the paper's local response
    normalization (k=2, n=5, alpha=1e-4, beta=0.75) after the first two convolutions; it has no
    parameters and is off by default, as most later reproductions leave it out.
    """
    check_input(input_shape, num_classes, "alexnet")
    if not len(filters) == len(kernel_sizes) == len(strides) >= 1:
        raise ValueError(
            "filters, kernel_sizes and strides need the same length (>= 1). Received: "
            f"{list(filters)}, {list(kernel_sizes)}, {list(strides)}"
        )
    if any(p > len(filters) for p in pool_after):
        raise ValueError(
            f"pool_after names convolutions 1..{len(filters)}. Received: {list(pool_after)}"
        )
    windows = []
    for i, (k, s) in enumerate(zip(kernel_sizes, strides, strict=True), start=1):
        windows.append((k, s, first_padding if i == 1 else "same"))
        if i in pool_after:
            windows.append((3, 2, "valid"))
    check_min_size(input_shape, windows, "alexnet", "its convolutions and 3x3 stride-2 max-pools")

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, (f, k, s) in enumerate(zip(filters, kernel_sizes, strides, strict=True), start=1):
        padding = first_padding if i == 1 else "same"
        x = conv_block(x, f, k, "relu", strides=s, padding=padding, name=f"conv{i}")
        if lrn and i <= 2:
            x = LocalResponseNormalization(name=f"conv{i}_lrn")(x)
        if i in pool_after:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=len(filters) + 1):
        x = dense_block(x, units, "relu", dropout=dropout, name=f"fc{i}")
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="alexnet")


# ----------------------------------------------------------------------------- named variants


# alexnet_cifar: AlexNet's five convolutions and their widths, sized for 32x32 inputs. Chosen
# here (there is no canonical version): 96@5x5 stride 1 (SAME) in place of 11x11 stride 4,
# 256@5x5, 384@3x3, 384@3x3, 256@3x3, the same 3x3 stride-2 max-pools after conv1, conv2 and
# conv5 (32 -> 15 -> 7 -> 3), and two hidden FC layers of 1024 instead of 4096. 7,139,722
# parameters for 10 classes on 32x32x3.
MODELS.register_variant(
    "alexnet_cifar", "alexnet", "AlexNet widths for 32x32: 5x5 stride 1, FC 1024",
    filters=(96, 256, 384, 384, 256), kernel_sizes=(5, 5, 3, 3, 3), strides=(1, 1, 1, 1, 1),
    first_padding="same", pool_after=(1, 2, 5), dense=(1024, 1024), params=("dropout", "lrn"),
)  # fmt: skip
