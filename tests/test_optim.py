"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import pytest

from dlintro import optim, schedules
from dlintro.registry import ParamsError


def _build(name: str, lr: float, schedule: str, total: int = 1000, spe: int = 100, **params):
    return optim.build(
        SimpleNamespace(name=name, learning_rate=lr, params={}),
        SimpleNamespace(name=schedule, params=params),
        total,
        spe,
    )


def test_published_exponential_decay() -> None:
    opt = _build("adam", 0.003, "exponential_decay", min_lr=1e-4, decay_steps=2000)
    for step in (0, 1000, 2000, 10_000):
        expected = 1e-4 + 0.003 * math.exp(-step / 2000)
        assert optim.learning_rate_at(opt, step) == pytest.approx(expected, rel=1e-5)


def test_piecewise_constant_in_steps_and_epochs() -> None:
    opt = _build(
        "sgd", 0.1, "piecewise_constant", boundaries=[32000, 48000], factors=[1, 0.1, 0.01]
    )
    got = [optim.learning_rate_at(opt, s) for s in (0, 31_999, 32_000, 47_999, 48_000)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    opt = _build(
        "sgd", 0.1, "piecewise_constant", spe=50, boundaries=[2], factors=[1, 0.5], unit="epoch"
    )
    assert optim.learning_rate_at(opt, 99) == pytest.approx(0.1)
    assert optim.learning_rate_at(opt, 100) == pytest.approx(0.05)


def test_piecewise_constant_checks_lengths() -> None:
    with pytest.raises(
        ParamsError, match=r"^optimizer/schedule: piecewise_constant needs one more factor"
    ):
        _build("sgd", 0.1, "piecewise_constant", boundaries=[10], factors=[1.0])


def test_cosine_with_warmup() -> None:
    opt = _build("sgd", 0.2, "cosine", total=110, warmup_steps=10)
    assert optim.learning_rate_at(opt, 0) == pytest.approx(0.0, abs=1e-7)
    assert optim.learning_rate_at(opt, 5) == pytest.approx(0.1)
    assert optim.learning_rate_at(opt, 10) == pytest.approx(0.2)
    assert optim.learning_rate_at(opt, 60) == pytest.approx(0.1, rel=1e-4)
    assert optim.learning_rate_at(opt, 110) == pytest.approx(0.0, abs=1e-6)


def test_constant_and_optimizer_params() -> None:
    opt = optim.build(
        SimpleNamespace(name="sgd", learning_rate=0.05, params={"momentum": 0.9, "nesterov": True}),
        SimpleNamespace(name="constant", params={}),
        10,
        1,
    )
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == pytest.approx(0.9)
    assert opt.nesterov is True
    assert optim.learning_rate_at(opt) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop"), ("adadelta", "Adadelta"),
     ("adagrad", "Adagrad"), ("adamax", "Adamax"), ("sgd", "SGD")],
)  # fmt: skip
def test_every_optimizer_builds(name: str, cls: str) -> None:
    opt = _build(name, 0.01, "constant")
    assert type(opt).__name__ == cls
    assert optim.learning_rate_at(opt) == pytest.approx(0.01)


def test_custom_schedules_survive_keras_serialization() -> None:
    sched = schedules.OffsetExponentialDecay(0.003, 1e-4, 2000.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert float(again(1000)) == pytest.approx(float(sched(1000)))
    pw = schedules.PiecewiseFactor(0.1, [5], [1.0, 0.1])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pw))
    assert float(again(7)) == pytest.approx(0.01)


def test_one_cycle_follows_pytorch_steps() -> None:
    opt = _build("sgd", 0.1, "one_cycle", total=100)
    initial, final = 0.1 / 25, 0.1 / 25 / 1e4  # PyTorch: min_lr = initial / final_div_factor
    peak, end = 0.3 * 100 - 1, 99  # max_lr at step 29, min_lr at the last step (99)

    def down(step: int) -> float:
        return final + (0.1 - final) / 2 * (math.cos(math.pi * (step - peak) / (end - peak)) + 1)

    expected = {
        0: initial, 10: initial + (0.1 - initial) * 10 / 29, 29: 0.1, 30: down(30), 64: down(64),
        80: down(80), 99: final, 500: final,
    }  # fmt: skip
    for step, lr in expected.items():
        assert optim.learning_rate_at(opt, step) == pytest.approx(lr, rel=1e-5, abs=1e-10), step
    assert expected[64] == pytest.approx(0.05, rel=1e-5)  # half-way down the cosine
    cos = _build("sgd", 0.1, "one_cycle", total=100, warmup="cosine")
    warm = 0.1 + (initial - 0.1) / 2 * (math.cos(math.pi * 10 / 29) + 1)  # anneal_strategy cos
    assert optim.learning_rate_at(cos, 10) == pytest.approx(warm, rel=1e-5)
    assert optim.learning_rate_at(cos, 64) == pytest.approx(down(64), rel=1e-5)
    custom = _build(
        "adam", 0.02, "one_cycle", total=41, pct_start=0.25, div_factor=10.0, final_div_factor=100.0
    )
    p = 0.25 * 41 - 1  # 9.25: a fractional peak, as in PyTorch
    assert optim.learning_rate_at(custom, 9) == pytest.approx(0.002 + 0.018 * 9 / p, rel=1e-5)
    t = (10 - p) / (40 - p)
    lr10 = 2e-5 + (0.02 - 2e-5) / 2 * (math.cos(math.pi * t) + 1)
    assert optim.learning_rate_at(custom, 10) == pytest.approx(lr10, rel=1e-5)
    assert optim.learning_rate_at(custom, 40) == pytest.approx(2e-5, rel=1e-5)


def test_new_schedules_survive_keras_serialization() -> None:
    for sched, step in (
        (schedules.OneCycle(0.1, 100, 0.3, 25.0, 1e4, "cosine"), 17),
        (schedules.ReduceOnPlateau(0.1, 0.5, 3, 0.0, "loss", 0.0), 5),
    ):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
        assert type(again) is type(sched)
        assert float(again(step)) == pytest.approx(float(sched(step)))


def test_learning_rate_through_a_loss_scale_optimizer() -> None:
    opt = keras.optimizers.LossScaleOptimizer(_build("sgd", 0.1, "one_cycle", total=100))
    assert optim.learning_rate_at(opt, 29) == pytest.approx(0.1)
    assert optim.learning_rate_at(opt, 0) == pytest.approx(0.004)
