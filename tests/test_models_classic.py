"""Classic CNN families (AlexNet, VGG, NiN, GoogLeNet, ResNet): counts, shapes, checks, saving."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlintro import inspect, models
from dlintro.errors import UserError
from dlintro.models.blocks import LocalResponseNormalization
from dlintro.models.resnet import ShortcutPadding

FAMILIES = {"alexnet", "vgg", "nin", "inception", "resnet"}
CLASSIC = [n for n in models.MODELS.names() if models.MODELS.meta(n)["family"] in FAMILIES]

# shared/LADDER.md, "Reference architectures": model -> (input, published count), 1000 classes.
# These models have no batch norm, so Keras' count_params() is the published count.
REFERENCE = {
    "alexnet": ((227, 227, 3), 62_378_344),
    "vgg11": ((224, 224, 3), 132_863_336),
    "vgg13": ((224, 224, 3), 133_047_848),
    "vgg16": ((224, 224, 3), 138_357_544),
    "vgg19": ((224, 224, 3), 143_667_240),
    # BVLC GoogLeNet (5x5 branches, conv biases, no BN, no aux heads); torchvision's 6,624,904
    # is the BN variant with 3x3 in place of 5x5.
    "googlenet": ((224, 224, 3), 6_998_552),
}

# ImageNet ResNets: the published (torchvision) counts are trainable parameters; Keras also
# counts each batch norm's moving mean and variance, 2 per BN channel. BN channels: ResNet-18
# 64 + 4x64 + (4+1)x128 + (4+1)x256 + (4+1)x512 = 4,800 (the +1 is the projection shortcut).
RESNET_IMAGENET = {  # name -> (published trainable count, BN channels)
    "resnet18": (11_689_512, 4_800),
    "resnet34": (21_797_672, 8_512),
    "resnet50": (25_557_032, 26_560),
    "resnet152": (60_192_808, 75_712),
}

# Inputs for forward passes: the smallest sensible for each (CIFAR models 32x32; AlexNet's
# minimum is 67x67; the ImageNet models that accept any size run at 64x64).
FORWARD_INPUT = {"alexnet": (67, 67, 3)} | {
    n: (64, 64, 3) for n in ("googlenet", "resnet", *RESNET_IMAGENET)
}
# Family builders whose defaults repeat a named variant run small instances of themselves.
FORWARD_PARAMS = {
    "vgg": {"stages": [[8], [8, 8], [16], [16], [16]], "dense": [32], "batch_norm": True},
    "resnet": {"block": "basic", "stage_blocks": [1, 1, 1, 1], "widths": [8, 8, 16, 16]},
    "resnet_cifar": {"depth": 8},
    "preact_resnet_cifar": {"depth": 11},
}

# Models built on 32x32x3 for 10 classes: (count_params(), trainable parameters).
CIFAR_COUNTS = {
    "resnet20": (271_098, 269_722),
    "resnet32": (466_426, 464_154),
    "resnet44": (661_754, 658_586),
    "resnet56": (857_082, 853_018),
    "resnet110": (1_736_058, 1_727_962),
    # Per stage (width w, input c, 18 blocks): the first block has 1x1 c->w, 3x3 w->w, 1x1 w->4w
    # and a 1x1 c->4w projection; the other 17 have 1x1 4w->w, 3x3, 1x1 w->4w. Convs:
    # 432 + (4,608 + 17 x 4,352) + (23,552 + 17 x 17,408) + (94,208 + 17 x 69,632) = 1,676,464.
    # BN channels: (48 + 17 x 96) + (128 + 17 x 192) + (256 + 17 x 384) + 256 final = 12,112.
    # Trainable 1,676,464 + 2 x 12,112 + 256 x 10 + 10 = 1,703,258 (the paper's 1.7M).
    "preact_resnet164": (1_703_258 + 2 * 12_112, 1_703_258),
    # 96x(5x5x3+1) + 256x(5x5x96+1) + 384x(3x3x256+1) + 384x(3x3x384+1) + 256x(3x3x384+1)
    # + 1024x(3x3x256+1) + 1024x1025 + 10x1025
    "alexnet_cifar": (7_139_722, 7_139_722),
    # 192x(5x5x3+1) + 160x193 + 96x193 + 192x(5x5x96+1) + 2 x 192x193 + 192x(3x3x192+1)
    # + 192x193 + 10x193
    "nin": (966_986, 966_986),
    # 13 convs without bias (14,710,464) + BN on 4,224 channels + FC 512x513 + 10x513
    "vgg16_cifar": (14_995_146, 14_986_698),
}


@pytest.fixture
def free_models() -> Iterator[None]:
    """Big models (VGG is 0.5 GB of weights) are released after the test."""
    yield
    keras.backend.clear_session()
    gc.collect()


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.usefixtures("free_models")
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_architectures_have_the_published_count(name: str) -> None:
    shape, published = REFERENCE[name]
    assert models.build(name, shape, 1000).count_params() == published


@pytest.mark.usefixtures("free_models")
@pytest.mark.parametrize("name", sorted(RESNET_IMAGENET))
def test_imagenet_resnets_have_the_torchvision_count(name: str) -> None:
    published, bn_channels = RESNET_IMAGENET[name]
    model = models.build(name, (224, 224, 3), 1000)
    assert trainable_count(model) == published
    assert model.count_params() == published + 2 * bn_channels


def cifar_resnet_params(n: int, classes: int = 10) -> tuple[int, int]:
    """(total, trainable) of ResNet-(6n+2) with option A shortcuts, by hand arithmetic.

    Convolutions have no bias; each is followed by BN (gamma, beta trainable; mean, variance
    not). conv1 3x3x3x16 = 432; stage 1: 2n convs of 3x3x16x16 = 2,304; stage 2: one 3x3x16x32 =
    4,608 and 2n-1 of 3x3x32x32 = 9,216; stage 3: one 3x3x32x64 = 18,432 and 2n-1 of 3x3x64x64 =
    36,864. BN channels: 16 + 2n x (16 + 32 + 64). Shortcuts: none (parameter-free).
    ResNet-20 (n=3): convs 432 + 13,824 + 4,608 + 46,080 + 18,432 + 184,320 = 267,696; BN
    channels 688; dense 64 x 10 + 10 = 650. Trainable 267,696 + 2 x 688 + 650 = 269,722 (the
    0.27M of the paper); total 269,722 + 2 x 688 = 271,098. (272,474 = 271,098 + 1,376 would
    count the moving statistics twice.)
    """
    convs = 432 + 2 * n * 2_304 + 4_608 + (2 * n - 1) * 9_216 + 18_432 + (2 * n - 1) * 36_864
    bn = 16 + 2 * n * (16 + 32 + 64)
    trainable = convs + 2 * bn + 64 * classes + classes
    return trainable + 2 * bn, trainable


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_counts_follow_the_hand_arithmetic(depth: int) -> None:
    assert cifar_resnet_params((depth - 2) // 6) == CIFAR_COUNTS[f"resnet{depth}"]


def test_cifar_resnet_option_a_shortcuts_have_no_weights() -> None:
    model = models.build("resnet20", (32, 32, 3), 10)
    shortcuts = [layer for layer in model.layers if "shortcut" in layer.name]
    assert len(shortcuts) == 2
    assert all(isinstance(s, ShortcutPadding) and not s.weights for s in shortcuts)


def test_cifar_resnet_option_b_adds_projections() -> None:
    model = models.build("resnet20", (32, 32, 3), 10, {"shortcut": "B"})
    # Two 1x1 projections (16->32, 32->64) with BN: 512 + 4 x 32 + 2,048 + 4 x 64.
    assert model.count_params() == 271_098 + 512 + 128 + 2_048 + 256


def test_classic_families_are_registered() -> None:
    expected = {
        "alexnet", "alexnet_cifar", "vgg", "vgg11", "vgg13", "vgg16", "vgg19", "vgg16_cifar",
        "vgg11_bn_cifar", "vgg16_bn_cifar",
        "nin", "googlenet", "resnet", "resnet_cifar", "resnet20", "resnet32", "resnet44",
        "resnet56", "resnet110", "preact_resnet_cifar", "preact_resnet164", "resnet18",
        "resnet34", "resnet50", "resnet152",
    }  # fmt: skip
    assert expected == set(CLASSIC)


@pytest.mark.parametrize("name", CLASSIC)
def test_forward_pass_gives_class_probabilities(name: str) -> None:
    """Every model on its smallest sensible input; the CIFAR-sized ones also check their count."""
    shape = FORWARD_INPUT.get(name, (32, 32, 3))
    model = models.build(name, shape, 10, FORWARD_PARAMS.get(name))
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 10)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert inspect.summarize(model).total_params == model.count_params()
    if name in CIFAR_COUNTS:
        assert (model.count_params(), trainable_count(model)) == CIFAR_COUNTS[name]


def test_googlenet_aux_heads_give_three_outputs() -> None:
    model = models.build("googlenet", (65, 65, 3), 5, {"aux_heads": True})
    assert model.output_names == ["probabilities", "aux1_probabilities", "aux2_probabilities"]
    outputs = model(np.zeros((2, 65, 65, 3), np.float32), training=False)
    assert len(outputs) == 3
    for probs in outputs:
        assert probs.shape == (2, 5)
        np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-5)
    # Each aux head: a 1x1 conv of 128 over 4a's 512 (4d's 528) channels, FC 1024 on the 1x1x128
    # map left by the 5x5 stride-3 pool of a 5x5 map (65 -> 33 -> 17 -> 9 -> 5), classifier.
    without = models.build("googlenet", (65, 65, 3), 5).count_params()
    aux1 = 128 * (512 + 1) + 1024 * (128 + 1) + 5 * (1024 + 1)
    aux2 = 128 * (528 + 1) + 1024 * (128 + 1) + 5 * (1024 + 1)
    assert model.count_params() == without + aux1 + aux2
    assert inspect.summarize(model).total_params == model.count_params()


def test_googlenet_aux_heads_count_on_224() -> None:
    model = models.build("googlenet", (224, 224, 3), 1000, {"aux_heads": True})
    assert model.count_params() == 13_378_280


@pytest.mark.parametrize(
    ("name", "shape", "params", "message"),
    [
        ("alexnet", (28, 28, 1), {}, r"alexnet needs at least 67x67 input .*\(28, 28, 1\)"),
        ("alexnet", (66, 227, 3), {}, "alexnet needs at least 67x67 input"),
        ("alexnet_cifar", (14, 14, 3), {}, "alexnet needs at least 15x15 input"),
        ("alexnet", (227, 227, 3), {"pool_after": [6]}, "pool_after"),
        ("vgg16", (28, 28, 1), {}, r"vgg needs at least 32x32 input .*\(28, 28, 1\)"),
        ("vgg16_cifar", (16, 16, 3), {}, "vgg needs at least 32x32 input"),
        ("googlenet", (64, 64, 3), {"aux_heads": True}, "aux_heads needs at least 65x65"),
        ("nin", (32, 32, 3), {"kernel_sizes": [5, 5]}, "same length"),
        ("resnet_cifar", (32, 32, 3), {"depth": 21}, r"6n\+2.*depth=21"),
        ("preact_resnet_cifar", (32, 32, 3), {"depth": 57}, r"9n\+2.*depth=57"),
        ("resnet", (64, 64, 3), {"widths": [64, 128]}, "same length"),
        ("resnet20", (32, 32, 3), {"shortcut": "C"}, "shortcut"),
        ("vgg11", (32, 32, 3), {"dropout": 1.0}, "dropout"),
        ("resnet18", (3072,), {}, "needs an image input"),
    ],
)
def test_builders_check_their_arguments(
    name: str, shape: tuple[int, ...], params: dict, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        models.build(name, shape, 10, params)


def test_local_response_normalization_matches_tensorflow() -> None:
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 12)).astype(np.float32) * 30
    ours = LocalResponseNormalization(2, 2.0, 1e-4, 0.75)(x)
    theirs = tf.nn.local_response_normalization(x, 2, 2.0, 1e-4, 0.75)
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_shortcut_padding_subsamples_and_appends_zero_channels() -> None:
    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    y = np.asarray(ShortcutPadding(8, 2)(x))
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    assert not y[..., 3:].any()


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("alexnet_cifar", (32, 32, 3), {"lrn": True}),
        ("vgg16_cifar", (32, 32, 3), {}),
        ("nin", (32, 32, 3), {}),
        ("googlenet", (32, 32, 3), {"lrn": True}),
        ("resnet20", (32, 32, 3), {}),
    ],
)
def test_keras_file_round_trip(name: str, shape: tuple, params: dict, tmp_path: Path) -> None:
    model = models.build(name, shape, 10, params)
    x = np.random.default_rng(2).random((2, *shape), dtype=np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for before, after in zip(
        keras.tree.flatten(model(x)), keras.tree.flatten(loaded(x)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(before), np.asarray(after), rtol=1e-5, atol=1e-6)
