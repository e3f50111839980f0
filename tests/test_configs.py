"""Every experiment in configs/ builds and trains two steps (on synthetic data, in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlintro import config, train
from tests.conftest import CONFIGS

SHRINK = [
    "data.dataset=synthetic",
    "data.params={num_train: 48, num_test: 16}",
    "data.validation_split=0.0",
    "train.steps=2",
    "train.epochs=null",
]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_trains_two_steps(path: Path, tmp_path: Path) -> None:
    cfg = config.load(path, SHRINK)
    result = train.run(cfg, run_dir=tmp_path / "run")
    assert result.steps == 2
    assert result.metrics["num_examples"] == 16
    assert len(result.metrics["confusion_matrix"]) == 10
    saved = config.load(tmp_path / "run" / "config.yaml")
    assert saved == cfg
