"""What the `auto` execution tests share: the CPUs they decide for, a fake clock, a tiny
config to probe for real."""

from __future__ import annotations

from types import SimpleNamespace

from dlintro import config
from tests.conftest import synthetic_config

AMX = {"model": "Intel Xeon", "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]}
AVX2 = {"model": "AMD EPYC", "flags": ["avx2", "fma"]}
AUTO = SimpleNamespace(jit_compile="auto", precision="auto", steps_per_execution="auto")


class Clock:
    """A clock that a fake measurement advances by `cost` seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tiny_config(**train: object) -> config.Config:
    """A 160-image synthetic MLP run of 30 steps (train keys as given)."""
    return config.load(
        data=synthetic_config(
            "tiny_auto", seed=4, num_train=160, num_test=32, batch_size=16,
            model={"name": "mlp", "params": {"hidden": [16]}},
            train={"steps": 30, **train},
        )
    )  # fmt: skip
