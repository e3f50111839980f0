"""Krizhevsky's cuda-convnet CIFAR-10 network (2012; example-layers/layers-18pct.cfg, "18% error
on CIFAR-10 in 20 minutes") and cuda-convnet's same-map response normalization (`rnorm`).

The layer definition: conv1 32@5x5 (padding 2) -> max-pool 3x3 stride 2 -> ReLU -> rnorm1;
conv2 32@5x5 ReLU -> avg-pool 3x3 stride 2 -> rnorm2; conv3 64@5x5 ReLU -> avg-pool 3x3
stride 2 -> fc10 -> softmax. 89,578 parameters on 32x32x3 for 10 classes:
32x(5x5x3+1) + 32x(5x5x32+1) + 64x(5x5x32+1) + 10x(4x4x64+1).

cuda-convnet's pools (start 0, outputsX = ceil((size - 3) / 2) + 1: 32 -> 16 -> 8 -> 4) are
Keras' "same" pools (windows at 0, 2, ...; TensorFlow's averages, like cuda-convnet's, divide by
the pixels inside the image). conv1 has no neuron and pool1 applies the ReLU; ReLU commutes with
max-pooling, so conv1 -> ReLU -> max-pool here computes the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import keras
from keras import layers
from pydantic import Field

from dlintro.models.blocks import (
    LocalResponseNormalization,
    Positive,
    check_input,
    probabilities,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated

Std = Annotated[float, Field(gt=0.0, le=10.0)]
Decay = Annotated[float, Field(ge=0.0, le=100.0)]
Norm = Literal["rnorm", "cmrnorm", "none"]


@keras.saving.register_keras_serializable(package="dlintro")
class SpatialResponseNormalization(layers.Layer):
    """cuda-convnet's `rnorm` (response normalization within each feature map); no weights.

    y = x * (1 + scale / size^2 * S)^-pow, where S sums x^2 of the same channel over the
    size x size window starting size // 2 pixels above and left of the pixel (centred for odd
    sizes) and clipped at the image's edge; the divisor stays size^2 at the edge, as in
    cuda-convnet (its parser divides the layer-params `scale` by size^2) and Caffe's
    WITHIN_CHANNEL LRN. Computed in float32 whatever the compute dtype.
    """

    def __init__(self, size: int = 3, scale: float = 5e-5, power: float = 0.75, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size, self.scale, self.power = int(size), float(scale), float(power)

    def call(self, inputs):
        from keras import ops

        x = ops.cast(inputs, "float32")
        k, before = self.size, self.size // 2
        h, w = (ops.shape(x)[i] if inputs.shape[i] is None else inputs.shape[i] for i in (1, 2))
        pad = [[0, 0], [before, k - 1 - before], [before, k - 1 - before], [0, 0]]
        squares = ops.pad(ops.square(x), pad)
        # The window sum S: two 1-D sums of shifted slices of the zero-padded squares.
        rows = sum(squares[:, i : i + h, :, :] for i in range(k))
        window = sum(rows[:, :, j : j + w, :] for j in range(k))
        y = x * ops.power(1.0 + (self.scale / (k * k)) * window, -self.power)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return super().get_config() | {
            "size": self.size,
            "scale": self.scale,
            "power": self.power,
        }


def response_norm(norm: str, size: int, scale: float, power: float, name: str) -> layers.Layer:
    """cuda-convnet's `rnorm` (same map) or `cmrnorm` (across maps) with layer-params scale/pow.

    cmrnorm is y = x * (1 + scale / size * sum of x^2 over `size` neighbouring channels)^-pow:
    LocalResponseNormalization (tf.nn.lrn) with depth_radius size // 2, bias 1, alpha
    scale / size; its window is symmetric, so cmrnorm needs an odd size here.
    """
    if norm == "rnorm":
        return SpatialResponseNormalization(size, scale, power, name=name)
    if size % 2 == 0:
        raise ValueError(
            f"cmrnorm needs an odd norm_size (a window centred on the channel). Received: {size}"
        )
    return LocalResponseNormalization(size // 2, 1.0, scale / size, power, name=name)


@MODELS.register(
    "cuda_convnet", family="cuda_convnet",
    description="Krizhevsky's cuda-convnet CIFAR-10 net (layers-18pct): 3 5x5 convs, rnorm",
)  # fmt: skip
@validated
def cuda_convnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Annotated[Sequence[Positive], Field(min_length=1, max_length=6)] = (32, 32, 64),
    kernel_size: Positive = 5,
    pools: Sequence[Literal["max", "avg"]] = ("max", "avg", "avg"),
    norm: Norm = "rnorm",
    norm_size: Positive = 3,
    norm_scale: Annotated[float, Field(ge=0.0, le=1.0)] = 5e-5,
    norm_pow: Annotated[float, Field(ge=0.0, le=4.0)] = 0.75,
    init_std: Sequence[Std] = (1e-4, 0.01, 0.01, 0.01),
    weight_decay: Sequence[Decay] | None = None,
    input_scale: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0,
) -> keras.Model:
    """Convolutions (SAME, ReLU) each followed by a 3x3 stride-2 pool, a response normalization
    after every pool but the last, then one Dense layer to the classes.

    Defaults are layers-18pct.cfg with layer-params-18pct.cfg's rnorm (size 3, scale 5e-5, pow
    0.75). `init_std` is each weighted layer's initW (weights N(0, initW^2), biases 0).
    `weight_decay` is each weighted layer's `wc` as a kernel regularizer with gradient wc x w
    (cuda-convnet: inc = mom x inc - eps x (grad + wc x w)); the layer-params file has 0.004
    for the convolutions and 1 for fc10. `input_scale` multiplies the images first: cuda-convnet
    saw pixels on 0..255 minus the mean image, which standardized inputs times about 64 restore
    (so that initW, wc and the rnorm scale mean what they meant there).
    """
    check_input(input_shape, num_classes, "cuda_convnet")
    weighted = len(filters) + 1
    if len(pools) != len(filters):
        raise ValueError(
            f"pools needs one entry per convolution ({len(filters)}). Received: {list(pools)}"
        )
    for what, values in (("init_std", init_std), ("weight_decay", weight_decay)):
        if values is not None and len(values) != weighted:
            raise ValueError(
                f"{what} needs one value per weighted layer ({len(filters)} convolutions and "
                f"the output layer: {weighted}). Received: {list(values)}"
            )
    decays = list(weight_decay) if weight_decay is not None else [0.0] * weighted

    def weights(i: int) -> dict:
        decay = decays[i]
        return {
            "kernel_initializer": keras.initializers.RandomNormal(stddev=init_std[i]),
            "kernel_regularizer": keras.regularizers.L2(decay / 2) if decay else None,
        }

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(input_scale, name="input_scale")(inputs) if input_scale != 1 else inputs
    for i, (f, pool) in enumerate(zip(filters, pools, strict=True), start=1):
        x = layers.Conv2D(f, kernel_size, padding="same", name=f"conv{i}", **weights(i - 1))(x)
        x = layers.Activation("relu", name=f"conv{i}_relu")(x)
        pooling = layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D
        x = pooling(3, strides=2, padding="same", name=f"pool{i}")(x)
        if norm != "none" and i < len(filters):
            x = response_norm(norm, norm_size, norm_scale, norm_pow, f"rnorm{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(num_classes, dtype="float32", name="logits", **weights(weighted - 1))(x)
    return keras.Model(inputs, probabilities(x), name="cuda_convnet")
