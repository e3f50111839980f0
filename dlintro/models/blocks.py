"""Layer blocks and argument types shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

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


def _weights(
    batch_norm: bool, kernel_stddev: float | None, bias_init: float, name: str
) -> dict[str, Any]:
    """A block's Dense/Conv2D weight arguments: no bias under batch norm (BN's offset serves)."""
    return {
        "use_bias": not batch_norm,
        "kernel_initializer": kernel_initializer(kernel_stddev),
        "bias_initializer": keras.initializers.Constant(bias_init),
        "name": name,
    }


def _norm_act(
    x: keras.KerasTensor,
    activation: str,
    batch_norm: bool,
    bn_scale: bool,
    bn_momentum: float,
    bias_init: float,
    name: str,
) -> keras.KerasTensor:
    """A block's tail after its Dense/Conv2D: [batch norm, offset `bias_init`] -> activation."""
    if batch_norm:
        x = batch_norm_layer(f"{name}_bn", bn_scale, bn_momentum, bias_init)(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


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
    x = layers.Dense(units, **_weights(batch_norm, kernel_stddev, bias_init, name))(x)
    x = _norm_act(x, activation, batch_norm, bn_scale, bn_momentum, bias_init, name)
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
    weights = _weights(batch_norm, kernel_stddev, bias_init, name)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, **weights)(x)
    return _norm_act(x, activation, batch_norm, bn_scale, bn_momentum, bias_init, name)


def classifier(
    x: keras.KerasTensor, num_classes: int, kernel_stddev: float | None = None, bias_init=0.0
) -> keras.KerasTensor:
    """The output layer: Dense to class scores and softmax, both in float32 under mixed
    precision (the class scores and the loss keep full precision)."""
    x = layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer(kernel_stddev),
        bias_initializer=keras.initializers.Constant(bias_init),
        dtype="float32",
        name="logits",
    )(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def probabilities(x: keras.KerasTensor, name: str = "probabilities") -> keras.KerasTensor:
    """Softmax over class scores already computed (e.g. pooled 1x1 convs), kept in float32."""
    return layers.Activation("softmax", dtype="float32", name=name)(x)


# ----------------------------------------------------------------------------- shape arithmetic

# One sliding window of a model's spatial path: (kernel, stride, padding), padding "same"/"valid".
Window = tuple[int, int, str]


def spatial_size(size: int, windows: Sequence[Window]) -> int:
    """The side of a feature map after `windows` (convolutions, poolings), 0 once it vanishes."""
    for kernel, stride, padding in windows:
        if size < 1:
            return 0
        size = -(-size // stride) if padding == "same" else (size - kernel) // stride + 1
    return max(size, 0)


def check_min_size(
    input_shape: Sequence[int], windows: Sequence[Window], model: str, why: str
) -> None:
    """Raise ValueError unless both spatial sides survive `windows`, naming the smallest that does.

    `why` says what shrinks the input, e.g. "an 11x11 stride-4 convolution and 3 max-pools".
    """
    if spatial_size(min(input_shape[:2]), windows) >= 1:
        return
    smallest = next(n for n in range(1, 1 << 16) if spatial_size(n, windows) >= 1)
    raise ValueError(
        f"{model} needs at least {smallest}x{smallest} input ({why}). "
        f"Received: {tuple(input_shape)}"
    )


# ----------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package="dlintro")
class LocalResponseNormalization(layers.Layer):
    """Local response normalization across channels (Krizhevsky et al., 2012); no weights.

    b_c = a_c / (bias + alpha * sum of a_j^2 for |j - c| <= depth_radius) ** beta, as in
    `tf.nn.local_response_normalization` (alpha is not divided by the window size, unlike Caffe).
    Computed in float32 whatever the compute dtype.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        from keras import ops

        x = ops.cast(inputs, "float32")
        channels, r = int(inputs.shape[-1]), self.depth_radius
        squares = ops.pad(ops.square(x), [[0, 0]] * (len(inputs.shape) - 1) + [[r, r]])
        window = sum(squares[..., i : i + channels] for i in range(2 * r + 1))
        y = x / ops.power(self.bias + self.alpha * window, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return super().get_config() | {
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
