"""Batch norm that trains on TensorFlow's fused kernel inside dlintro's own training step.

Keras 3 trains batch norm as separate ops (moments, then the normalization, with casts to
float32 under mixed precision); TensorFlow's FusedBatchNormV3 does the forward and backward
pass each in one kernel. Measured on an AMD EPYC Zen 4 (2 cores, oneDNN, no XLA), per training
step: ResNet-20 float32 409 -> 203 ms and bfloat16 208-230 -> 156-163 ms (batch 128),
cifar_speednet float32 2019 -> 1751 ms and bfloat16 about even (1270 -> 1200-1285 ms; batch
512), the MNIST BN convnet (gorner_conv_bn, batch 100) bfloat16 32 -> 29 ms. Under XLA the
fused op is slower (ResNet-20 float32 488 -> 819 ms), so `BatchNorm` takes the fused path only
while `fused(True)` is active, which dlintro.loop sets around the forward pass of a step
compiled without XLA.

The kernel runs in float32 under mixed precision too, as Keras' layer computes: fed bfloat16
directly it was 11% faster on ResNet-20 (138-146 ms) but slower than Keras on gorner_conv_bn
(41-62 ms). Dense (2-D) inputs stay on Keras' ops: reshaped to 4-D for the kernel, the MLP with
batch norm went from 3.2-3.5 to 4.3 ms per step.

Everywhere else (inference, evaluation, Keras' own `fit`, XLA steps) it *is* Keras'
BatchNormalization: same config, weights and arithmetic, so a saved model exports as that
built-in layer with identical outputs (dlintro.builtin), and the plain-Keras baseline of
scripts/benchmark.py runs plain Keras. The fused path updates the moving statistics exactly as
Keras does (momentum, biased batch variance); its outputs and gradients equal Keras' up to
float rounding (tests/test_batchnorm.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import keras

_FUSED: ContextVar[bool] = ContextVar("dlintro_fused_batch_norm", default=False)


@contextlib.contextmanager
def fused(on: bool) -> Iterator[None]:
    """While active (in this thread), BatchNorm layers called in training use the fused kernel
    if `on`. Read when a step is traced, so it decides the compiled program."""
    token = _FUSED.set(on)
    try:
        yield
    finally:
        _FUSED.reset(token)


@keras.saving.register_keras_serializable(package="dlintro")
class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training pass runs TensorFlow's fused kernel
    inside `fused(True)` (NHWC inputs; see the module doc)."""

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = int(inputs.shape[-1])
        x = tf.cast(inputs, "float32")
        ones = tf.ones([channels], "float32")
        scale = tf.cast(self.gamma.value, "float32") if self.scale else ones
        offset = tf.cast(self.beta.value, "float32") if self.center else tf.zeros_like(ones)
        empty = tf.zeros([0], "float32")
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=float(self.epsilon), data_format="NHWC", is_training=True,
        )  # fmt: skip
        # The kernel returns the unbiased (n - 1) batch variance for the moving average; Keras
        # averages the biased one, which the normalization itself uses.
        n = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        """The fused kernel computes this layer's training pass: asked for, TensorFlow,
        channels-last 4-D input, and none of renorm, sync or masks."""
        return (
            _FUSED.get()
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and inputs.shape[-1] is not None
        )
