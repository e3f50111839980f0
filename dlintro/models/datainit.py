"""Data-dependent initialization: layers whose initial weights come from the training images.

Builders stay data-agnostic: a layer type registers an initializer here
(`@data_initializer(LayerType)`, fn(layer, inputs) with `inputs` the layer's own input
computed from a sample of training images), and the trainer calls
`initialize_from_data(net, prepare, num_train)` once the model is built, before a checkpoint
is restored (a resumed run restores the values it saved). The sample is `SAMPLE_IMAGES`
training images spread evenly over the training set (image folders are sorted by class, so the
first images would be one class), normalized as the model gets them, without augmentation.
Layers are initialized in graph order, so a later layer sees the earlier ones initialized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from dlintro.models.blocks import PatchWhitening, whitening_kernel

SAMPLE_IMAGES = 5000  # as airbench: 5,000 training images estimate the patch covariance
CHUNK = 500  # images per covariance chunk (bounds the patch matrix in memory)

Initializer = Callable[[Any, np.ndarray], None]
_INITIALIZERS: dict[type, Initializer] = {}


def data_initializer(layer_type: type) -> Callable[[Initializer], Initializer]:
    """Register fn(layer, inputs: float32 [N, ...] of the layer's input) for `layer_type`."""

    def decorator(fn: Initializer) -> Initializer:
        if layer_type in _INITIALIZERS:
            raise ValueError(f"a data initializer for {layer_type.__name__} is registered twice")
        _INITIALIZERS[layer_type] = fn
        return fn

    return decorator


def _leaves(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        else:
            yield layer


def data_layers(model: keras.Model) -> list[Any]:
    """The model's layers (nested models included) that have a data initializer."""
    return [layer for layer in _leaves(model) if type(layer) in _INITIALIZERS]


def sample_indices(num_train: int, n: int = SAMPLE_IMAGES) -> np.ndarray:
    """min(n, num_train) indices spread evenly over range(num_train), in order."""
    n = min(n, num_train)
    return (np.arange(n, dtype=np.int64) * num_train) // max(n, 1)


def initialize_from_data(
    model: keras.Model, prepare: Callable[[Any], Any], num_train: int
) -> list[str]:
    """Run every registered data initializer of `model` on a training sample; return the names
    of the layers it set. `prepare(indices)` gives the normalized training images at those
    indices (DataBundle.prepare). Nothing happens (and no image is read) without such layers."""
    targets = data_layers(model)
    if not targets:
        return []
    import tensorflow as tf

    images = prepare(tf.constant(sample_indices(num_train), tf.int32))
    for layer in targets:
        if layer.input is model.inputs[0]:
            inputs = np.asarray(images, np.float32)
        else:  # the layer's input as the (partly initialized) model computes it
            features = keras.Model(model.inputs, layer.input)
            inputs = np.asarray(features.predict(images, batch_size=256, verbose=0), np.float32)
        _INITIALIZERS[type(layer)](layer, inputs)
    return [layer.name for layer in targets]


def patch_covariance(images: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """The (uncentred) covariance E[p p^T] of every `patch` window ("valid", stride 1) of
    images [N, H, W, C], a patch flattened in (row, column, channel) order (a Conv2D kernel's
    [kh, kw, in] order). Float64, in chunks of CHUNK images."""
    kh, kw = patch
    c = images.shape[-1]
    total = np.zeros((kh * kw * c, kh * kw * c), np.float64)
    count = 0
    for start in range(0, len(images), CHUNK):
        x = np.asarray(images[start : start + CHUNK], np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
        # windows: [b, h-kh+1, w-kw+1, c, kh, kw] -> rows of (kh, kw, c)
        rows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)
        total += rows.T @ rows
        count += rows.shape[0]
    return total / max(count, 1)


@data_initializer(PatchWhitening)
def whiten(layer: PatchWhitening, inputs: np.ndarray) -> None:
    """Set the whitening kernel from the patch covariance of the sample (bias left as is)."""
    kh, kw = layer.kernel_size
    covariance = patch_covariance(inputs, (kh, kw))
    layer.kernel.assign(whitening_kernel(covariance, (kh, kw, inputs.shape[-1]), layer.eps))
