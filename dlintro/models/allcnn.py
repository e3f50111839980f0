"""All-CNN (Springenberg et al., 2014, "Striving for Simplicity"): convolutions only."""

from __future__ import annotations

import keras
from keras import layers

from dlintro.models.blocks import (
    Dropout,
    Positive,
    check_input,
    check_min_size,
    conv_block,
    probabilities,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated


@MODELS.register("allcnn", family="allcnn", description="All-CNN-C: strided convs, no pooling")
@validated
def allcnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: Positive = 96,
    input_dropout: Dropout = 0.2,
    dropout: Dropout = 0.5,
) -> keras.Model:
    """All-CNN-C: max-pooling replaced by 3x3 stride-2 convolutions, global average pooling.

    3x3 conv w, 3x3 conv w, 3x3 conv w stride 2 (dropout), 3x3 conv 2w, 3x3 conv 2w, 3x3 conv
    2w stride 2 (dropout), 3x3 conv 2w VALID, 1x1 conv 2w, 1x1 conv to `num_classes`, global
    average, softmax; ReLU throughout; dropout on the input too, as published. With w = 96 on
    32x32x3 and 10 classes: 1,369,738 parameters.
    """
    check_input(input_shape, num_classes, "allcnn")
    check_min_size(
        input_shape, [(3, 2, "same"), (3, 2, "same"), (3, 1, "valid")], "allcnn",
        "two stride-2 convolutions and a 3x3 VALID convolution",
    )  # fmt: skip
    wide = 2 * width
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Dropout(input_dropout, name="input_dropout")(inputs) if input_dropout else inputs
    for i, (filters, stride) in enumerate([(width, 1), (width, 1), (width, 2)], start=1):
        x = conv_block(x, filters, 3, "relu", strides=stride, name=f"conv{i}")
    x = layers.Dropout(dropout, name="dropout1")(x) if dropout else x
    for i, (filters, stride) in enumerate([(wide, 1), (wide, 1), (wide, 2)], start=4):
        x = conv_block(x, filters, 3, "relu", strides=stride, name=f"conv{i}")
    x = layers.Dropout(dropout, name="dropout2")(x) if dropout else x
    x = conv_block(x, wide, 3, "relu", padding="valid", name="conv7")
    x = conv_block(x, wide, 1, "relu", name="conv8")
    x = conv_block(x, num_classes, 1, "relu", name="conv9")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, probabilities(x), name="allcnn")
