"""Layer blocks and argument types shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import keras
import numpy as np
from keras import layers
from pydantic import Field

from dlintro.models.batchnorm import BatchNorm

# Parameter types for builder signatures: the registry validates config values against them.
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Positive = Annotated[int, Field(ge=1)]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "gelu", "swish", "linear"]
KernelStd = Annotated[float, Field(gt=0.0, le=10.0)] | None
BiasInit = Annotated[float, Field(ge=-10.0, le=10.0)]
Momentum = Annotated[float, Field(ge=0.0, lt=1.0)]
# Kernel initializers by name (see `initializer`): Keras' own, or the identity of `Dirac`.
InitName = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "dirac"]


def batch_norm_layer(name: str, scale: bool, momentum: float, offset: float) -> layers.Layer:
    """Batch norm whose offset (beta) replaces the preceding layer's bias, as in the BN paper."""
    return BatchNorm(
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


# ----------------------------------------------------------------------------- initializers


@keras.saving.register_keras_serializable(package="dlintro")
class Dirac(keras.initializers.Initializer):
    """Identity (Dirac) initialization of a convolution kernel [kh, kw, in, out]: filter i
    (i < min(in, out)) passes input channel i through unchanged (centre tap kh//2, kw//2 is 1,
    every other tap and channel 0); the other out - in filters keep the `rest` initializer,
    as airbench does it (PyTorch's dirac_ on the first `in` filters). A dense kernel [in, out]
    gets the same: an identity block, the other columns from `rest`."""

    def __init__(self, rest: str = "glorot_uniform", seed: int | None = None) -> None:
        self.rest, self.seed = rest, seed

    def __call__(self, shape, dtype=None):
        from keras import ops

        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"dirac initializes kernels of rank >= 2. Received: shape={shape}")
        values = np.array(ops.convert_to_numpy(initializer(self.rest, self.seed)(shape)))
        n = min(shape[-2], shape[-1])
        centre = tuple(d // 2 for d in shape[:-2])
        values[..., :n] = 0.0
        values[(*centre, np.arange(n), np.arange(n))] = 1.0
        return ops.convert_to_tensor(values, dtype=dtype or "float32")

    def get_config(self) -> dict[str, Any]:
        return {"rest": self.rest, "seed": self.seed}


def initializer(name: str, seed: int | None = None) -> keras.Initializer:
    """A kernel initializer by name (InitName): Keras' glorot/he ones, or `Dirac`."""
    if name == "dirac":
        return Dirac(seed=seed)
    keras_init = {
        "glorot_uniform": keras.initializers.GlorotUniform,
        "glorot_normal": keras.initializers.GlorotNormal,
        "he_uniform": keras.initializers.HeUniform,
        "he_normal": keras.initializers.HeNormal,
    }
    if name not in keras_init:
        raise ValueError(f"unknown initializer '{name}' (known: dirac, {', '.join(keras_init)})")
    return keras_init[name](seed=seed)


# ----------------------------------------------------------------------------- whitening


@keras.saving.register_keras_serializable(package="dlintro")
class PatchWhitening(layers.Conv2D):
    """A frozen first convolution that whitens the image's `patch_size` x `patch_size`
    patches: 2 x (patch_size^2 x channels) filters, "valid" padding, a trainable bias.

    Its kernel is not trainable. dlintro.models.datainit sets it from the training images
    before training (`whitening_kernel`: the eigenvectors of the patch covariance scaled by
    1 / sqrt(eigenvalue + eps), and their negatives, as in airbench and hlb-CIFAR10); until
    then it holds the whitening of white patches (unit covariance): +-1 on each patch
    element. A saved model keeps the computed kernel.
    """

    def __init__(self, filters: int, kernel_size=2, eps: float = 5e-4, **kwargs) -> None:
        kwargs.update(padding="valid", strides=1, dilation_rate=1, groups=1)
        kwargs.setdefault("kernel_initializer", "zeros")
        super().__init__(filters, kernel_size, **kwargs)
        self.eps = float(eps)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        size = int(np.prod(self.kernel.shape[:-1]))
        if self.filters != 2 * size:
            raise ValueError(
                f"{self.name}: a patch whitening of {size} patch elements has {2 * size} "
                f"filters. Received: filters={self.filters}"
            )
        self.kernel.trainable = False
        self.kernel.assign(signed_identity(tuple(self.kernel.shape[:-1])))

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"eps": self.eps}


def signed_identity(patch_shape: tuple[int, ...]) -> np.ndarray:
    """[*patch_shape, 2n] kernel: filter j < n is patch element j, filter n + j its negative."""
    n = int(np.prod(patch_shape))
    eye = np.eye(n, dtype=np.float32)
    return np.concatenate([eye, -eye], axis=1).reshape(*patch_shape, 2 * n)


def whitening_kernel(
    covariance: np.ndarray, patch_shape: tuple[int, ...], eps: float
) -> np.ndarray:
    """The [*patch_shape, 2n] kernel whitening patches of this (n x n) covariance: columns
    v_k / sqrt(lambda_k + eps) in descending order of lambda_k, then their negatives. Applied
    to the patches, the first n outputs have covariance diag(lambda / (lambda + eps)): about
    the identity for every direction whose variance exceeds eps."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, np.float64))
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    scaled = vectors / np.sqrt(values + eps)
    return np.concatenate([scaled, -scaled], axis=1).reshape(*patch_shape, -1).astype(np.float32)
