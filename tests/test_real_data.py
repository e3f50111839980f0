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


def test_a_run_reopened_in_a_new_shell_reads_the_data_directory_it_recorded(
    mnist_dir: Path, tmp_path: Path
) -> None:
    """Trained with --data-dir; then real `dlintro eval`, `train --resume` and `preview`
    processes without it (no DLINTRO_DATA_DIR, an empty cache, offline) use the run's recorded
    data directory."""
    import json
    import os
    import subprocess
    import sys

    cfg = config.load(CONFIGS / "mnist_softmax.yaml", ["train.steps=20", "train.epochs=null"])
    result = train.run(cfg, run_dir=tmp_path / "run", data_dir=mnist_dir)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["data"]["root"] == str(mnist_dir.resolve())
    env = {k: v for k, v in os.environ.items() if k != "DLINTRO_DATA_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), DLINTRO_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "dlintro", "eval", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{result.metrics['accuracy']:.2%}" in done.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_examples"] == 10_000
    # the same for a resume (five more steps) and a preview of the run
    for args in (
        ["train", "--resume", str(tmp_path / "run"), "--force", "--steps", "25"],
        ["preview", str(tmp_path / "run")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "dlintro", *args],
            env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["steps"] == 25
    assert (tmp_path / "run" / "preview.png").stat().st_size > 1000
