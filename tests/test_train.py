"""Training runs: what a run directory holds, TensorBoard scalars, exact lengths, repeatability."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlintro import config, evaluate, train
from dlintro.errors import UserError
from tests.conftest import synthetic_config

BASE = synthetic_config(
    "tiny",
    seed=3,
    num_train=200,
    num_test=50,
    batch_size=20,
    data={"validation_split": 0.1},
    optimizer={"name": "adam", "learning_rate": 0.003},
    schedule={"name": "exponential_decay", "params": {"min_lr": 1e-4, "decay_steps": 20}},
    train={"epochs": 3, "log_every": 3},
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[config.Config, train.Result]:
    cfg = config.load(data=BASE)
    return cfg, train.run(cfg, run_dir=tmp_path_factory.mktemp("runs") / "tiny")


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        out[tag] = [(e.step, float(np.asarray(_tensor(e)))) for e in acc.Tensors(tag)]
    return out


def _tensor(event):  # tf.summary v2 writes scalars as tensors
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)


def test_run_directory_holds_everything(tiny_run) -> None:
    _, result = tiny_run
    run = result.run_dir
    for name in ("config.yaml", "meta.json", "model.keras", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished"
    assert meta["steps"] == 27 == result.steps  # 180 training images / 20 = 9 steps x 3 epochs
    assert meta["data"]["num_train"] == 180 and meta["data"]["num_validation"] == 20
    assert meta["model"]["params"] == 122_270
    assert meta["versions"]["tensorflow"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 50
    assert np.asarray(metrics["confusion_matrix"]).sum() == 50
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    with (run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [9, 18, 27]
    assert float(rows[-1]["learning_rate"]) == pytest.approx(1e-4 + 0.003 * np.exp(-27 / 20), 1e-4)


def test_tensorboard_scalars_read_back(tiny_run) -> None:
    _, result = tiny_run
    train_tags = _scalars(result.run_dir / "logs" / "train")
    val_tags = _scalars(result.run_dir / "logs" / "validation")
    assert [s for s, _ in train_tags["loss"]] == [9, 18, 27]
    assert [s for s, _ in val_tags["accuracy"]] == [9, 18, 27]
    assert {"accuracy", "learning_rate", "images_per_second", "batch_loss"} <= set(train_tags)
    for step, lr in train_tags["learning_rate"]:
        assert lr == pytest.approx(1e-4 + 0.003 * np.exp(-step / 20), rel=1e-4)
    with (result.run_dir / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert train_tags["loss"][-1][1] == pytest.approx(float(last["loss"]), rel=1e-4)
    test_tags = _scalars(result.run_dir / "logs" / "test")
    assert test_tags["accuracy"][0][1] == pytest.approx(result.metrics["accuracy"])


def test_saved_config_reproduces_the_run(tiny_run, tmp_path: Path) -> None:
    _, first = tiny_run
    again = train.run(config.load(first.run_dir / "config.yaml"), run_dir=tmp_path / "again")
    assert again.metrics["accuracy"] == first.metrics["accuracy"]
    assert again.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=1e-5)
    assert again.metrics["confusion_matrix"] == first.metrics["confusion_matrix"]


def test_eval_of_saved_model_matches_training_metrics(tiny_run) -> None:
    _, result = tiny_run
    metrics = evaluate.evaluate_run(result.run_dir)
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert metrics["loss"] == pytest.approx(result.metrics["loss"], rel=1e-5)


@pytest.mark.parametrize(("steps", "spe"), [(7, 1), (7, 50), (20, 4)])
def test_training_stops_at_the_exact_step(steps: int, spe: int, tmp_path: Path) -> None:
    cfg = config.load(
        data=BASE | {"train": {"steps": steps, "steps_per_execution": spe}},
        overrides=["data.validation_split=0"],
    )
    result = train.run(cfg, run_dir=tmp_path / "r")
    assert result.steps == steps
    with (tmp_path / "r" / "history.csv").open() as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) == steps


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    cfg = config.load(data=BASE | {"model": {"name": "lenet5", "params": {"pad": 0}}})
    with pytest.raises(UserError, match="lenet5 needs at least 32x32"):
        train.run(cfg, run_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_missing_data_files_name_the_files(tmp_path: Path) -> None:
    cfg = config.load(data=BASE | {"data": {"dataset": "mnist"}})
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz") as info:
        train.run(cfg, run_dir=tmp_path / "never", data_dir=tmp_path / "empty")
    assert "DLINTRO_DATA_DIR" in str(info.value)
    assert not (tmp_path / "never").exists()


def test_progress_lines_fall_on_multiples_of_log_every(tmp_path: Path) -> None:
    """10 steps per epoch, 4 per execution (cut at epoch ends), log_every 6: a line at the first
    chunk end at or past each multiple of 6, not 6 after the last line (which would drift to
    20, 28). Label smoothing is named in every line; no validation split, no validation run."""
    from io import StringIO

    from rich.console import Console

    from dlintro.progress import PlainReporter

    cfg = config.load(
        data=synthetic_config(
            "lines",
            seed=1,
            num_train=80,
            num_test=16,
            batch_size=8,
            model={"name": "mlp", "params": {"hidden": [8]}},
            train={
                "epochs": 3,
                "steps_per_execution": 4,
                "log_every": 6,
                "label_smoothing": 0.1,
                "jit_compile": False,
            },
            tensorboard={"histogram_every_epochs": 0, "images": False},
        )
    )
    out = StringIO()
    train.run(cfg, run_dir=tmp_path / "run", reporter=PlainReporter(Console(file=out, width=400)))
    lines = out.getvalue().splitlines()
    steps = [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("step ")]
    assert steps == [8, 14, 18, 24, 30]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[3] for line in epochs] == ["10", "20", "30"]
    progress = [line for line in lines if line.startswith(("step ", "epoch "))]
    assert len(progress) == 8 and all("smoothed loss " in line for line in progress)
    assert "val_loss" not in out.getvalue()
    logs = tmp_path / "run" / "logs"
    assert (logs / "train").is_dir() and not (logs / "validation").exists()


@pytest.mark.parametrize("jit", [False, True])
def test_rows_feed_trains_as_the_stream_does(jit: bool) -> None:
    """The rows feed (one device, nothing to augment) and the stream's iterator give the same
    weights after the same steps, across a short last batch and an epoch end (XLA or not)."""
    import keras

    from dlintro.data.feed import Feed
    from dlintro.trainer import Trainer

    cfg = config.load(
        data=synthetic_config(
            "feed",
            seed=2,
            num_train=88,
            num_test=16,
            batch_size=16,  # 5 x 16 + 8
            model={"name": "mlp", "params": {"hidden": [8]}},
            train={"steps": 14, "steps_per_execution": 4, "jit_compile": jit},
        )
    )
    weights = []
    for rows in (True, False):
        session = Trainer(cfg).build()
        spe = session.bundle.steps_per_epoch
        stream = session.bundle.train_stream(0, indices=True)
        feed = session.feed(0) if rows else Feed(spe, iterator=iter(stream))
        assert (feed.rows is not None) == rows
        step, chunks = 0, []
        while step < 14:
            n = feed.chunk(step, min(4, 14 - step, spe - step % spe))
            assert feed.run(session.runner, step, n) == n
            step, chunks = step + n, [*chunks, n]
        # Rows cut each epoch before its short last batch: 4, 1, 1 | 4, 1, 1 | 2
        assert chunks == ([4, 1, 1, 4, 1, 1, 2] if rows else [4, 2, 4, 2, 2])
        weights.append([w.numpy() for w in session.net.weights])
        assert session.runner.metrics()["accuracy"] >= 0
        keras.backend.clear_session()
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cross a rows part"):
        feed = Feed(spe, rows=session.bundle.train_rows)
        feed.run(session.runner, 4, 2)


def test_the_run_keeps_an_inference_model_and_a_test_sample(tiny_run) -> None:
    """inference.keras takes raw 0..255 images (uint8 or float) and reproduces the run's test
    accuracy on the kept sample, which is the dataset's first test images, uint8, with labels."""
    import keras

    from dlintro import artifacts
    from dlintro.data.sources import load_dataset
    from dlintro.predict import probabilities
    from dlintro.runs import load_model, run_spec

    cfg, result = tiny_run
    run = result.run_dir
    with np.load(run / "sample.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["calibration_images", "test_images", "test_labels"]
        x, y, calibration = f["test_images"], f["test_labels"], f["calibration_images"]
    arrays = load_dataset("synthetic", Path("."), cfg.data.params)[1]
    assert x.dtype == np.uint8 and np.array_equal(x, arrays.x_test[:300])  # all 50 of them
    assert np.array_equal(y, arrays.y_test) and len(calibration) == 200
    model = keras.saving.load_model(run / "inference.keras", compile=False)
    assert model.input.dtype == "float32" and tuple(model.input.shape) == (None, 28, 28, 1)
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_array_equal(probs, model.predict(x.astype(np.float32), verbose=0))
    spec = run_spec(run)
    reference = probabilities(spec, load_model(run / "model.keras"), x)
    np.testing.assert_allclose(probs, reference, rtol=0, atol=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.mean(probs.argmax(axis=1) == y) == metrics["accuracy"]
    assert artifacts.load_sample(run, spec.input_shape).test_images.shape == x.shape
