"""The CIFAR-10 ladder's VGG-BN and cuda-convnet rows: published parameter counts (by hand
arithmetic), cuda-convnet's response normalizations against their formulas, the recipes'
configs."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from dlintro import config, data, models, optim
from dlintro.errors import UserError
from dlintro.models.cuda_convnet import SpatialResponseNormalization, response_norm
from dlintro.models.vgg import CONFIGURATIONS
from tests.conftest import CONFIGS


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def torchvision_vgg_bn(stages: tuple[tuple[int, ...], ...], classes: int = 10) -> tuple[int, int]:
    """(trainable, BN channels) of torchvision's VGG-BN on 32x32: 3x3 convs with bias, BN gamma
    and beta, then 512 -> 4096 -> 4096 -> classes."""
    convs, channels, c = 0, 0, 3
    for stage in stages:
        for f in stage:
            convs += f * (9 * c + 1)
            channels, c = channels + f, f
    head = 4096 * (512 + 1) + 4096 * (4096 + 1) + classes * (4096 + 1)
    return convs + 2 * channels + head, channels


# huyvnphan/PyTorch_CIFAR10's README: vgg11_bn 28.150 M, vgg16_bn 33.647 M parameters.
VGG_BN = {"vgg11_bn_cifar": ("A", 28_149_514, 2_752), "vgg16_bn_cifar": ("D", 33_646_666, 4_224)}


@pytest.mark.parametrize("name", sorted(VGG_BN))
def test_vgg_bn_cifar_has_the_published_count(name: str) -> None:
    configuration, published, bn_channels = VGG_BN[name]
    assert torchvision_vgg_bn(CONFIGURATIONS[configuration]) == (published, bn_channels)
    model = models.build(name, (32, 32, 3), 10)
    assert trainable_count(model) == published
    assert f"{published / 1e6:.3f}" in ("28.150", "33.647")
    assert model.count_params() == published + 2 * bn_channels  # BN's moving mean and variance
    keras.backend.clear_session()


def test_torchvision_layout_keeps_conv_biases_and_pytorch_batch_norm() -> None:
    model = models.build("vgg11_bn_cifar", (32, 32, 3), 10)
    conv = model.get_layer("conv1_1")
    assert conv.use_bias
    bn = model.get_layer("conv1_1_bn")
    assert (bn.momentum, bn.epsilon) == (pytest.approx(0.9), pytest.approx(1e-5))
    fc = model.get_layer("fc2").get_weights()[0]
    assert abs(fc.std() - 0.01) < 5e-4  # N(0, 0.01), 16.8M draws
    assert model.get_layer("fc1_dropout").rate == 0.5
    # The dlintro layout is unchanged: BN's offset replaces the convolution's bias.
    assert not models.build("vgg16_cifar", (32, 32, 3), 10).get_layer("conv1_1").use_bias
    keras.backend.clear_session()


def test_cuda_convnet_has_the_layers_18pct_count() -> None:
    model = models.build("cuda_convnet", (32, 32, 3), 10)
    by_hand = 32 * (5 * 5 * 3 + 1) + 32 * (5 * 5 * 32 + 1) + 64 * (5 * 5 * 32 + 1) + 10 * 1025
    assert model.count_params() == trainable_count(model) == by_hand == 89_578
    # cuda-convnet's pools: outputsX = ceil((size - 3) / 2) + 1, so 32 -> 16 -> 8 -> 4.
    sizes = [model.get_layer(f"pool{i}").output.shape[1] for i in (1, 2, 3)]
    assert sizes == [math.ceil((s - 3) / 2) + 1 for s in (32, 16, 8)] == [16, 8, 4]


def test_cuda_convnet_average_pool_divides_by_the_pixels_inside() -> None:
    """cuda-convnet's AvgPooler divides by the window's pixels inside the image: a constant map
    stays constant at the edges (a divisor of 9 would shrink the last row and column)."""
    pool = models.build("cuda_convnet", (32, 32, 3), 10).get_layer("pool2")
    out = np.asarray(pool(np.full((1, 16, 16, 32), 3.0, np.float32)))
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


def rnorm_reference(x: np.ndarray, size: int, scale: float, power: float) -> np.ndarray:
    """cuda-convnet's kRNorm: window [p - size//2, p - size//2 + size) clipped, divisor size^2."""
    _, h, w, _ = x.shape
    out = np.empty_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            r0, c0 = max(0, i - size // 2), max(0, j - size // 2)
            r1, c1 = min(h, i - size // 2 + size), min(w, j - size // 2 + size)
            s = (x[:, r0:r1, c0:c1, :].astype(np.float64) ** 2).sum(axis=(1, 2))
            out[:, i, j, :] = x[:, i, j, :] * (1 + scale / size**2 * s) ** -power
    return out


@pytest.mark.parametrize("size", [3, 4])
def test_rnorm_matches_cuda_convnets_formula(size: int) -> None:
    x = np.random.default_rng(3).normal(size=(2, 7, 6, 4)).astype(np.float32) * 40
    ours = np.asarray(SpatialResponseNormalization(size, 5e-3, 0.75)(x))
    np.testing.assert_allclose(ours, rnorm_reference(x, size, 5e-3, 0.75), rtol=1e-5)
    # The strength matters: with this scale the largest responses are damped by over 20%.
    assert np.max(np.abs(ours) / np.maximum(np.abs(x), 1e-6)) < 1.0
    assert np.min(np.abs(ours) / np.maximum(np.abs(x), 1e-6)) < 0.8


def test_cmrnorm_matches_cuda_convnets_formula() -> None:
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 9)).astype(np.float32) * 30
    size, scale, power = 5, 1e-3, 0.75
    expected = np.empty_like(x, dtype=np.float64)
    for f in range(9):
        lo, hi = max(0, f - size // 2), min(9, f - size // 2 + size)
        s = (x[..., lo:hi].astype(np.float64) ** 2).sum(axis=-1)
        expected[..., f] = x[..., f] * (1 + scale / size * s) ** -power
    ours = np.asarray(response_norm("cmrnorm", size, scale, power, "n")(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_cuda_convnet_weight_decay_is_half_wc_times_the_squared_kernels() -> None:
    """Each layer's wc as a loss 0.5 x wc x |W|^2 (gradient wc x W, cuda-convnet's update)."""
    wc = [0.004, 0.004, 0.004, 1.0]
    model = models.build("cuda_convnet", (32, 32, 3), 10, {"weight_decay": wc})
    kernels = [model.get_layer(n).kernel.numpy() for n in ("conv1", "conv2", "conv3", "logits")]
    expected = sum(
        0.5 * d * float((k.astype(np.float64) ** 2).sum()) for d, k in zip(wc, kernels, strict=True)
    )
    model(np.zeros((1, 32, 32, 3), np.float32))
    assert float(sum(np.asarray(v) for v in model.losses)) == pytest.approx(expected, rel=1e-5)
    # initW: N(0, 1e-4^2) for conv1, N(0, 0.01^2) for the others.
    assert abs(kernels[0].std() - 1e-4) < 1e-5 and abs(kernels[2].std() - 0.01) < 5e-4


def test_cuda_convnet_input_scale_multiplies_the_images() -> None:
    plain = models.build("cuda_convnet", (32, 32, 3), 10, {"norm": "none"})
    scaled = models.build("cuda_convnet", (32, 32, 3), 10, {"norm": "none", "input_scale": 4.0})
    scaled.set_weights(plain.get_weights())
    x = np.random.default_rng(5).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(scaled(x)), np.asarray(plain(4 * x)), rtol=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"norm": "cmrnorm", "norm_size": 4}, "cmrnorm needs an odd norm_size"),
        ({"pools": ["max", "avg"]}, "pools needs one entry per convolution"),
        ({"weight_decay": [0.004, 1.0]}, "weight_decay needs one value per weighted layer"),
    ],
)
def test_cuda_convnet_checks_its_arguments(params: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        models.build("cuda_convnet", (32, 32, 3), 10, params)


def test_cuda_convnet_survives_a_keras_file(tmp_path: Path) -> None:
    model = models.build("cuda_convnet", (32, 32, 3), 10, {"weight_decay": [0.004] * 3 + [1.0]})
    x = np.random.default_rng(6).random((2, 32, 32, 3), dtype=np.float32) * 50
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5)


# ----------------------------------------------------------------------------- the configs

CONFIG_COUNTS = {  # config -> (count_params, trainable) on 32x32x3, 10 classes
    "cifar10_keras_conv": (1_084_234, 1_084_234),
    "cifar10_vgg11_bn": (28_155_018, 28_149_514),
    "cifar10_vgg16_bn": (33_655_114, 33_646_666),
    "cifar10_cuda_convnet": (89_578, 89_578),
}


@pytest.mark.parametrize("name", sorted(CONFIG_COUNTS))
def test_ladder_config_builds_the_published_count(name: str) -> None:
    cfg = config.load(CONFIGS / f"{name}.yaml")
    info = data.dataset_info(cfg.data.dataset, cfg.data.params)
    model = models.build(cfg.model.name, info.input_shape, info.num_classes, cfg.model.params)
    assert (model.count_params(), trainable_count(model)) == CONFIG_COUNTS[name]
    keras.backend.clear_session()


def test_keras_conv_config_is_its_measured_recipe() -> None:
    """Adam at a one-cycle rate (peak 2e-3 after a quarter of the steps), crop + flip, dropout
    only after the dense layer, the mirror view at test time: the recipe the README measured."""
    cfg = config.load(CONFIGS / "cifar10_keras_conv.yaml")
    model = models.build(cfg.model.name, (32, 32, 3), 10, cfg.model.params)
    rates = {layer.name: layer.rate for layer in model.layers if hasattr(layer, "rate")}
    assert {name: rate for name, rate in rates.items() if rate} == {"dense1_dropout": 0.1}
    assert [a.name for a in cfg.data.augment] == ["random_crop", "random_flip"]
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.eval.tta) == (32, 10, "flip")
    opt = optim.build(cfg.optimizer, cfg.schedule, 15_630, 1_563)
    assert type(opt).__name__ == "Adam"
    peak = round(0.25 * 15_630)
    lrs = [optim.learning_rate_at(opt, s) for s in (0, peak, 15_629)]
    assert lrs[1] == pytest.approx(2e-3, rel=1e-3)
    assert lrs[0] == pytest.approx(2e-3 / 25, rel=1e-3)
    assert lrs[2] < 1e-6


def test_cuda_convnet_config_doubles_the_bias_rate() -> None:
    cfg = config.load(CONFIGS / "cifar10_cuda_convnet.yaml")
    paths = ["conv1/kernel", "conv1/bias", "logits/kernel", "logits/bias"]
    chosen = [optim.group_of(p, cfg.optimizer.groups) for p in paths]
    assert chosen == [None, 0, None, 0]
    assert cfg.optimizer.groups[0].lr_multiplier == 2.0
    opt = optim.build(cfg.optimizer, cfg.schedule, 140 * 391, 391)
    assert [optim.learning_rate_at(opt, s) for s in (0, 120 * 391, 130 * 391)] == pytest.approx(
        [1e-3, 1e-4, 1e-5]
    )


@pytest.mark.parametrize("name", ["cifar10_vgg11_bn", "cifar10_vgg16_bn"])
def test_vgg_bn_configs_warm_up_for_30_percent_then_cosine(name: str) -> None:
    """huyvnphan's WarmupCosineLR: 1e-8 -> 0.01 linearly over 30% of the steps, cosine to 1e-8."""
    cfg = config.load(CONFIGS / f"{name}.yaml")
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.train.l2) == (256, 100, 0.01)
    total = 100 * 196
    opt = optim.build(cfg.optimizer, cfg.schedule, total, 196)
    peak = int(0.3 * total) - 1
    rates = [optim.learning_rate_at(opt, s) for s in (0, peak // 2, peak, total - 1)]
    assert rates == pytest.approx([1e-8, 0.005, 0.01, 1e-8], rel=1e-3)
    halfway_down = peak + (total - 1 - peak) // 2
    assert optim.learning_rate_at(opt, halfway_down) == pytest.approx(0.005, rel=1e-3)
