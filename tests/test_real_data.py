"""Short trainings on the real MNIST files of ../shared/datasets (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlintro import config, evaluate, train
from tests.conftest import CONFIGS


def test_softmax_reaches_90_percent_in_one_epoch(mnist_dir: Path, tmp_path: Path) -> None:
    cfg = config.load(CONFIGS / "mnist_softmax.yaml", ["train.epochs=1", "train.steps=null"])
    result = train.run(cfg, run_dir=tmp_path / "softmax", data_dir=mnist_dir)
    assert result.steps == 600
    assert result.metrics["num_examples"] == 10_000
    assert result.metrics["accuracy"] >= 0.90
    assert sum(map(sum, result.metrics["confusion_matrix"])) == 10_000
    again = evaluate.evaluate_run(result.run_dir, data_dir=mnist_dir)
    assert again["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_fashion_mnist_trains(mnist_dir: Path, tmp_path: Path) -> None:
    cfg = config.load(
        CONFIGS / "mnist_softmax.yaml",
        ["data.dataset=fashion_mnist", "train.steps=300", "name=fashion_softmax"],
    )
    result = train.run(cfg, run_dir=tmp_path / "fashion", data_dir=mnist_dir)
    assert result.metrics["class_names"][0] == "T-shirt/top"
    assert 0.70 <= result.metrics["accuracy"] < 0.90
