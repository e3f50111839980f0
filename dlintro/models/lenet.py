"""LeNet-5 (LeCun et al., 1998), with the fully connected C3 of the common modern reading."""

from __future__ import annotations

from typing import Annotated, Literal

import keras
from keras import layers
from pydantic import Field

from dlintro.models.blocks import Activation, check_input, classifier, conv_block, dense_block
from dlintro.models.registry import MODELS
from dlintro.registry import validated


@MODELS.register(
    "lenet5", family="lenet", description="LeNet-5: conv 6, pool, conv 16, pool, 120-84"
)
@validated
def lenet5(
    input_shape: tuple[int, ...],
    num_classes: int,
    pad: Annotated[int, Field(ge=0, le=64)] = 2,
    activation: Activation = "tanh",
    pooling: Literal["average", "max"] = "average",
) -> keras.Model:
    """C1 5x5x6, S2, C3 5x5x16, S4, C5 5x5x120, F6 84, output; `pad` zeros around the input.

    On 28x28 MNIST the default pad of 2 gives the 32x32 input of the paper, where C5 sees a
    5x5 map and so is a 120-unit layer (61,706 parameters for 10 classes).
    """
    check_input(input_shape, num_classes, "lenet5")
    height, width = input_shape[0] + 2 * pad, input_shape[1] + 2 * pad
    if min(height, width) < 32:
        raise ValueError(
            f"lenet5 needs at least 32x32 after padding; input {tuple(input_shape)} with pad={pad} "
            f"gives {height}x{width}. Use pad >= {(32 - min(input_shape[:2]) + 1) // 2}"
        )
    pool = layers.AveragePooling2D if pooling == "average" else layers.MaxPooling2D
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.ZeroPadding2D(pad, name="pad")(inputs) if pad else inputs
    x = conv_block(x, 6, 5, activation, padding="valid", name="c1")
    x = pool(2, name="s2")(x)
    x = conv_block(x, 16, 5, activation, padding="valid", name="c3")
    x = pool(2, name="s4")(x)
    x = conv_block(x, 120, 5, activation, padding="valid", name="c5")
    x = layers.Flatten(name="flatten")(x)
    x = dense_block(x, 84, activation, name="f6")
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="lenet5")
