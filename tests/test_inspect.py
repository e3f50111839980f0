"""Tests for dlintro.inspect: exact parameter counts, arithmetic strings and MACs."""

from __future__ import annotations

import json

import keras
import pytest
from keras import layers

from dlintro.inspect import format_count, format_macs, summarize


def _gorner_conv() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(4, 5, strides=1, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(8, 5, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(12, 4, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(200, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="gorner_conv")


def test_single_conv_arithmetic_and_macs() -> None:
    inputs = keras.Input((32, 32, 3))
    outputs = layers.Conv2D(6, 5, padding="valid", name="c1")(inputs)
    summary = summarize(keras.Model(inputs, outputs))
    (conv,) = summary.layers
    assert conv.name == "c1"
    assert conv.type == "Conv2D"
    assert conv.params == 456
    assert conv.trainable_params == 456
    assert conv.arithmetic == "6 x (5 x 5 x 3 + 1) = 456"
    assert conv.output_shape == (28, 28, 6)
    assert conv.macs == 28 * 28 * 6 * 5 * 5 * 3
    assert summary.input_shape == (32, 32, 3)
    assert summary.total_params == 456
    assert summary.macs == 28 * 28 * 6 * 5 * 5 * 3


def test_gorner_conv_per_layer() -> None:
    summary = summarize(_gorner_conv())
    assert summary.total_params == 122_270
    assert summary.trainable_params == 122_270
    assert summary.non_trainable_params == 0
    assert [s.type for s in summary.layers] == [
        "Conv2D",
        "Conv2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert [s.params for s in summary.layers] == [104, 808, 1548, 0, 117_800, 2010]
    assert [s.output_shape for s in summary.layers] == [
        (28, 28, 4),
        (14, 14, 8),
        (7, 7, 12),
        (588,),
        (200,),
        (10,),
    ]
    arithmetic = [s.arithmetic for s in summary.layers]
    assert arithmetic == [
        "4 x (5 x 5 x 1 + 1) = 104",
        "8 x (5 x 5 x 4 + 1) = 808",
        "12 x (4 x 4 x 8 + 1) = 1,548",
        "",
        "200 x (588 + 1) = 117,800",
        "10 x (200 + 1) = 2,010",
    ]
    # MACs by hand: output positions x filters x kernel volume; dense: in x units.
    expected = [
        28 * 28 * 4 * 5 * 5 * 1,
        14 * 14 * 8 * 5 * 5 * 4,
        7 * 7 * 12 * 4 * 4 * 8,
        0,
        588 * 200,
        200 * 10,
    ]
    assert [s.macs for s in summary.layers] == expected
    assert summary.macs == sum(expected) == 430_064


def test_conv_without_bias_and_batch_norm() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(24, 3, use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    outputs = layers.ReLU(name="relu")(x)
    summary = summarize(keras.Model(inputs, outputs))
    conv, bn, relu = summary.layers
    assert conv.arithmetic == "24 x 3 x 3 x 3 = 648"
    assert conv.params == 648
    assert conv.macs == 6 * 6 * 24 * 3 * 3 * 3
    assert bn.arithmetic == "4 x 24 = 96 (48 trainable)"
    assert (bn.params, bn.trainable_params) == (96, 48)
    assert bn.macs == 6 * 6 * 24
    assert (relu.params, relu.arithmetic, relu.macs) == (0, "", 0)
    assert summary.total_params == 744
    assert summary.trainable_params == 696
    assert summary.non_trainable_params == 48


def test_nested_sequential_is_flattened() -> None:
    block = keras.Sequential(
        [layers.Conv2D(8, 3, padding="same", name="conv"), layers.MaxPooling2D(name="pool")],
        name="block",
    )
    inputs = keras.Input((16, 16, 3))
    x = block(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="head")(x)
    model = keras.Model(inputs, outputs)
    summary = summarize(model)
    assert [s.name for s in summary.layers] == ["block/conv", "block/pool", "gap", "head"]
    assert summary.layers[0].arithmetic == "8 x (3 x 3 x 3 + 1) = 224"
    assert summary.layers[0].output_shape == (16, 16, 8)
    assert summary.layers[1].output_shape == (8, 8, 8)
    assert summary.total_params == model.count_params() == 224 + 90


def test_depthwise_and_separable() -> None:
    inputs = keras.Input((10, 10, 4))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    outputs = layers.SeparableConv2D(16, 3, name="sep")(x)
    dw, sep = summarize(keras.Model(inputs, outputs)).layers
    assert dw.arithmetic == "4 x 2 x (3 x 3 + 1) = 80"
    assert dw.macs == 8 * 8 * 8 * 3 * 3
    assert sep.arithmetic == "3 x 3 x 8 + 16 x (8 + 1) = 216"
    assert sep.macs == 6 * 6 * 8 * (3 * 3 + 16)


def test_frozen_layer_reports_trainable_count() -> None:
    inputs = keras.Input((5,))
    outputs = layers.Dense(3, trainable=False)(inputs)
    summary = summarize(keras.Model(inputs, outputs))
    assert summary.layers[0].arithmetic == "3 x (5 + 1) = 18 (0 trainable)"
    assert (summary.trainable_params, summary.non_trainable_params) == (0, 18)


def test_to_dict_is_json() -> None:
    data = json.loads(json.dumps(summarize(_gorner_conv()).to_dict()))
    for key in ("name", "input_shape", "total_params", "trainable_params"):
        assert key in data
    assert {"non_trainable_params", "macs", "layers"} <= data.keys()
    assert data["input_shape"] == [28, 28, 1]
    assert data["total_params"] == 122_270
    assert set(data["layers"][4]) == {
        "name",
        "type",
        "output_shape",
        "params",
        "trainable_params",
        "arithmetic",
        "macs",
    }
    assert data["layers"][4]["arithmetic"] == "200 x (588 + 1) = 117,800"


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (456, "456"), (122_270, "122,270"), (1_192_042, "1,192,042")],
)
def test_format_count(n: int, text: str) -> None:
    assert format_count(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (950, "950"),
        (850_000, "850 K"),
        (12_345_678, "12.3 M"),
        (1_450_000_000, "1.45 G"),
        (430_064, "430 K"),
        (999_999, "1.00 M"),
    ],
)
def test_format_macs(n: int, text: str) -> None:
    assert format_macs(n) == text
