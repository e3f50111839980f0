"""Model builders: published parameter counts, shapes, and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from dlintro import config, models
from dlintro.errors import UserError
from tests.conftest import CONFIGS

# shared/LADDER.md: config -> published parameter count
PUBLISHED_PARAMS = {
    "mnist_softmax": 7_850,
    "mnist_mlp5_sigmoid": 185_300,
    "mnist_mlp5_relu_decay": 185_300,
    "mnist_mlp5_relu_decay_dropout": 185_300,
    "mnist_conv": 122_270,
    "mnist_conv_big_dropout": 244_076,
    "mnist_mlp_16x16": 13_002,
    "mnist_keras_basic": 407_050,
    "mnist_keras_cnn": 1_192_042,
    "mnist_keras_cnn_augmented": 1_192_042,
    "mnist_lenet5": 61_706,
    "mnist_tf_deep": 3_274_634,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_config_model_has_the_published_parameter_count(name: str) -> None:
    cfg = config.load(CONFIGS / f"{name}.yaml")
    model = models.build(cfg.model.name, (28, 28, 1), 10, cfg.model.params)
    assert model.count_params() == PUBLISHED_PARAMS[name]


def test_cifar_keras_conv_has_its_published_count() -> None:
    assert models.build("keras_cifar_conv", (32, 32, 3), 10).count_params() == 1_084_234


def test_batch_norm_models_use_bn_offsets_instead_of_biases() -> None:
    model = models.build("mlp5", (28, 28, 1), 10, {"batch_norm": True})
    dense1 = model.get_layer("dense1")
    assert not dense1.use_bias
    # 4 hidden layers of Dense without bias + BN (gamma, beta, mean, variance) + output Dense.
    hidden = 784 * 200 + 200 * 100 + 100 * 60 + 60 * 30
    assert model.count_params() == hidden + 4 * (200 + 100 + 60 + 30) + 30 * 10 + 10
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == hidden + 2 * (200 + 100 + 60 + 30) + 30 * 10 + 10


MNIST_FAMILIES = {"mlp", "convnets", "lenet"}  # the others: tests/test_models_classic.py


@pytest.mark.parametrize(
    "name", [n for n in models.MODELS.names() if models.MODELS.meta(n)["family"] in MNIST_FAMILIES]
)
def test_every_model_outputs_class_probabilities(name: str) -> None:
    shape = (32, 32, 3) if name == "keras_cifar_conv" else (28, 28, 1)
    model = models.build(name, shape, 7)
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 7)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_truncated_normal_init_and_constant_bias() -> None:
    model = models.build("gorner_conv", (28, 28, 1), 10, {"kernel_stddev": 0.1, "bias_init": 0.1})
    kernel, bias = model.get_layer("dense").get_weights()
    assert abs(kernel.std() - 0.088) < 0.01  # a normal truncated at 2 std has std 0.88 x 0.1
    assert np.abs(kernel).max() <= 0.2 + 1e-6
    np.testing.assert_allclose(bias, 0.1)


def test_lenet5_pads_mnist_to_32() -> None:
    model = models.build("lenet5", (28, 28, 1), 10)
    assert model.get_layer("pad").output.shape[1:3] == (32, 32)
    assert model.get_layer("c5").output.shape[1:] == (1, 1, 120)


@pytest.mark.parametrize(
    ("name", "shape", "params", "message"),
    [
        ("lenet5", (20, 20, 1), {}, "lenet5 needs at least 32x32 after padding"),
        ("plain_convnet", (8, 8, 1), {"stages": [[8], [8], [8], [8]]}, "too small"),
        ("strided_convnet", (28, 28, 1), {"filters": [4, 8], "strides": [1]}, "same length"),
        ("mlp", (28, 28, 1), {"dropout": 1.5}, "dropout"),
        ("mlp", (784,), {}, "needs an image input"),
    ],
)
def test_builders_check_their_arguments(
    name: str, shape: tuple[int, ...], params: dict, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        models.build(name, shape, 10, params)


def test_builders_need_two_classes() -> None:
    with pytest.raises(UserError, match="at least 2 classes"):
        models.build("softmax", (28, 28, 1), 1)
