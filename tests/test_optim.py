"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import pytest

from dlintro import optim


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
    with pytest.raises(ValueError, match="one more factor than boundaries"):
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
     ("adagrad", "Adagrad"), ("sgd", "SGD")],
)  # fmt: skip
def test_every_optimizer_builds(name: str, cls: str) -> None:
    opt = _build(name, 0.01, "constant")
    assert type(opt).__name__ == cls
    assert optim.learning_rate_at(opt) == pytest.approx(0.01)


def test_custom_schedules_survive_keras_serialization() -> None:
    sched = optim.OffsetExponentialDecay(0.003, 1e-4, 2000.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert float(again(1000)) == pytest.approx(float(sched(1000)))
    pw = optim.PiecewiseFactor(0.1, [5], [1.0, 0.1])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pw))
    assert float(again(7)) == pytest.approx(0.01)
