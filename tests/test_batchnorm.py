"""dlintro's BatchNorm (dlintro.models.batchnorm): inside dlintro's step compiled without XLA it
trains on TensorFlow's fused kernel, computing what Keras' BatchNormalization computes (outputs,
gradients, moving statistics); everywhere else it is that layer, to the bit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlintro import models
from dlintro.loop import DistributedStepRunner, StepRunner
from dlintro.models.batchnorm import BatchNorm, fused

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(8, 5, 6, 4)) * 3 + 1).astype(np.float32)
W = RNG.normal(size=(8, 5, 6, 4)).astype(np.float32)  # the loss's weights: sum(W * y)


def _pair(momentum: float, **kwargs: object) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """Keras' layer and dlintro's, built alike with the same non-trivial gamma and beta."""
    a = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, **kwargs)
    b = BatchNorm(momentum=momentum, epsilon=1e-5, **kwargs)
    for layer in (a, b):
        layer.build(X.shape)
        if layer.scale:
            layer.gamma.assign(np.linspace(0.5, 2.0, 4))
        if layer.center:
            layer.beta.assign(np.linspace(-1.0, 1.0, 4))
    return a, b


def _fused_ops(fn: tf.types.experimental.PolymorphicFunction, *args: object) -> list[str]:
    graph = fn.get_concrete_function(*args).graph
    return sorted({op.type for op in graph.get_operations() if op.type.startswith("FusedBatch")})


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], ids=["f32", "bf16"])
@pytest.mark.parametrize("scale", [True, False], ids=["scale", "noscale"])
def test_fused_training_pass_computes_what_keras_does(policy: str, scale: bool) -> None:
    keras.mixed_precision.set_global_policy(policy)
    try:
        a, b = _pair(0.9, scale=scale)

        @tf.function
        def step(layer: keras.layers.Layer, on: bool) -> tuple[tf.Tensor, list[tf.Tensor]]:
            x = tf.cast(X, layer.compute_dtype)
            with fused(on), tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * W)
            return y, tape.gradient(loss, [x, *layer.trainable_variables])

        ya, ga = step(a, False)
        yb, gb = step(b, True)
        assert _fused_ops(step, b, True) == ["FusedBatchNormGradV3", "FusedBatchNormV3"]
        assert _fused_ops(step, b, False) == [] and _fused_ops(step, a, True) == []
        assert yb.dtype == ya.dtype == tf.as_dtype(a.compute_dtype)
        f32 = lambda t: np.asarray(tf.cast(t, tf.float32))  # noqa: E731
        assert np.abs(f32(ya)).max() > 1.0  # normalized, scaled and shifted: not trivially 0
        np.testing.assert_allclose(f32(yb), f32(ya), rtol=0, atol=1e-4)
        assert len(ga) == len(gb) == (3 if scale else 2)
        for g_keras, g_fused in zip(ga, gb, strict=True):
            np.testing.assert_allclose(f32(g_fused), f32(g_keras), rtol=1e-5, atol=1e-4)
        # the moving averages take the *biased* batch variance, as Keras' do (the kernel's own
        # is unbiased: n / (n - 1) larger, which 1e-4 would see here: n = 240)
        x = f32(tf.cast(X, a.compute_dtype)).reshape(-1, 4).astype(np.float64)  # as the layers saw
        np.testing.assert_allclose(b.moving_variance.numpy(), 0.9 + 0.1 * x.var(0), rtol=1e-5)
        np.testing.assert_allclose(b.moving_variance.numpy(), a.moving_variance.numpy(), 1e-6)
        np.testing.assert_allclose(b.moving_mean.numpy(), 0.1 * x.mean(0), rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_outside_training_it_is_keras_batch_normalization_to_the_bit() -> None:
    a, b = _pair(0.99)
    for layer in (a, b):
        layer.moving_mean.assign([0.5, -0.2, 1.0, 0.0])
        layer.moving_variance.assign([2.0, 0.3, 1.0, 4.0])
    with fused(True):  # inference never takes the fused path
        assert np.array_equal(b(X, training=False).numpy(), a(X, training=False).numpy())
    assert np.array_equal(b(X, training=True).numpy(), a(X, training=True).numpy())  # not asked
    assert b.get_config() | {"name": "x"} == a.get_config() | {"name": "x"}
    b.trainable = False  # frozen: inference statistics even in training, as Keras does
    with fused(True):
        assert np.array_equal(b(X, training=True).numpy(), a(X, training=False).numpy())


def test_dlintros_steps_fuse_batch_norm_only_without_xla() -> None:
    """The runner's step compiled without XLA holds the fused kernels; with XLA (where they are
    slower) Keras' own ops, as in every model dlintro builds with batch norm."""
    net = models.build("resnet_cifar", (8, 8, 3), 3, {"depth": 8})
    assert sum(isinstance(layer, BatchNorm) for layer in net.layers) == 7
    x, y = tf.zeros((4, 8, 8, 3)), tf.zeros((4,), tf.int64)
    plain = StepRunner(net, keras.optimizers.SGD(0.1), jit_compile=False)
    xla = StepRunner(net, keras.optimizers.SGD(0.1), jit_compile=True)
    assert _fused_ops(plain._step, x, y) == ["FusedBatchNormGradV3", "FusedBatchNormV3"]
    assert _fused_ops(xla._step, x, y) == []
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        net = models.build("resnet_cifar", (8, 8, 3), 3, {"depth": 8})
        optimizer = keras.optimizers.SGD(0.1)
        for jit, expected in ((False, 2), (True, 0)):
            runner = DistributedStepRunner(net, optimizer, jit, strategy, global_batch=4)
            assert len(_fused_ops(runner._grads, x, y)) == expected
