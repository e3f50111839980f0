"""TensorBoard logs of a run, read back with TensorBoard's own reader (EventAccumulator) and
through a real TensorBoard server on 127.0.0.1; and the `dlintro board` command."""

from __future__ import annotations

import csv
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.util import tensor_util
from typer.testing import CliRunner

from dlintro import board, config, data, models, runs, train
from dlintro.cli import app
from dlintro.loop import StepRunner
from dlintro.record import Recorder, SilentReporter
from tests.conftest import synthetic_config

TINY = synthetic_config(
    "board",
    seed=5,
    num_train=64,
    num_test=32,
    batch_size=16,
    data={"validation_split": 0.25},  # 48 training images: 3 steps per epoch
    optimizer={"name": "adam", "learning_rate": 0.003},
    train={"epochs": 2, "log_every": 1},
    tensorboard={"histogram_every_epochs": 1, "images": True, "profile_steps": [1, 3]},
)
STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[config.Config, train.Result]:
    cfg = config.load(data=TINY)
    return cfg, train.run(cfg, run_dir=tmp_path_factory.mktemp("runs") / "board")


def _acc(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})  # 0: keep everything
    acc.Reload()
    return acc


def _values(acc: EventAccumulator, tag: str) -> list[tuple[int, np.ndarray]]:
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]


def _plugin(acc: EventAccumulator, tag: str) -> str:
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def _png_shape(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_histograms_of_weights_and_gradients(run) -> None:
    _, result = run
    acc = _acc(result.run_dir / "logs" / "model")
    tags = acc.Tags()["tensors"]
    model = runs.load_model(result.run_dir / "model.keras")
    for w in model.trainable_weights:
        weights, grads = f"weights/{w.path}", f"gradients/{w.path}"
        assert weights in tags and grads in tags, w.path
        assert _plugin(acc, weights) == _plugin(acc, grads) == "histograms"
        # at the start, after each epoch (histogram_every_epochs: 1)
        assert [s for s, _ in _values(acc, weights)] == [0, 3, 6]
        assert [s for s, _ in _values(acc, grads)] == [0, 3, 6]
        # the last histogram is of the final weights: every value counted, within its range
        buckets = _values(acc, weights)[-1][1]  # [k, 3]: left edge, right edge, count
        final = np.asarray(w.numpy()).ravel()
        assert buckets[:, 2].sum() == pytest.approx(final.size)
        assert buckets[0, 0] <= final.min() + 1e-6 and buckets[-1, 1] >= final.max() - 1e-6
        g = _values(acc, grads)[-1][1]
        assert g[:, 2].sum() == pytest.approx(final.size)
        assert np.abs(g[:, :2]).max() > 0  # real gradients, not zeros


def test_images_text_and_graph(run) -> None:
    cfg, result = run
    model_acc = _acc(result.run_dir / "logs" / "model")
    (step, samples), *_ = _values(model_acc, "augmented_samples")
    assert step == 0 and _plugin(model_acc, "augmented_samples") == "images"
    width, height = int(samples[0]), int(samples[1])
    # 16 images of 28x28 in 8 columns, 2-pixel borders: 8 * 30 + 2 wide, 2 * 30 + 2 high
    assert (width, height) == (242, 62) == _png_shape(samples[2])

    text = {
        tag: _values(model_acc, tag)[0][1].item().decode() for tag in ("config", "model_summary")
    }
    shown = "\n".join(line.removeprefix("    ") for line in text["config"].splitlines())
    # the config as it ran: `auto` execution settings resolved (meta.json's execution choice)
    chosen = json.loads((result.run_dir / "meta.json").read_text())["execution"]["choice"]
    resolved = cfg.to_dict()
    resolved["train"].update(chosen)
    assert yaml.safe_load(shown) == resolved
    assert "conv1" in text["model_summary"] and "Total params" in text["model_summary"]

    assert model_acc.Tags()["graph"]
    ops = {node.op for node in model_acc.Graph().node} | {
        node.op for f in model_acc.Graph().library.function for node in f.node_def
    }
    assert {"Conv2D", "MatMul", "Softmax"} <= ops

    for tag in ("confusion_matrix", "misclassified"):
        ((step, image),) = _values(model_acc, tag)
        assert step == 6 and _plugin(model_acc, tag) == "images"
        w, h = _png_shape(image[2])
        assert w > 200 and h > 200
    assert result.metrics["accuracy"] < 1.0  # so that the gallery had something to show


def test_split_runs_hold_scalars_only(run) -> None:
    _, result = run
    expected = {
        "train": {"loss", "accuracy", "batch_loss", "learning_rate", "images_per_second",
                  "epoch_seconds"},
        "validation": {"loss", "accuracy"},
        "test": {"loss", "accuracy"},
    }  # fmt: skip
    for split, tags in expected.items():
        acc = _acc(result.run_dir / "logs" / split)
        assert set(acc.Tags()["tensors"]) == tags, split
        assert {_plugin(acc, t) for t in tags} == {"scalars"}
        assert not acc.Tags()["graph"]
    train = _acc(result.run_dir / "logs" / "train")
    description = train.SummaryMetadata("batch_loss").summary_description
    assert description.startswith("Mean training loss of the epoch so far")
    # the last log step is the epoch's end: the running loss there is the epoch's loss
    assert _values(train, "batch_loss")[-1] == _values(train, "loss")[-1]


def test_hparams_and_profile(run) -> None:
    _, result = run
    acc = _acc(result.run_dir / "logs")
    content = acc.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content
    info = hp_metadata.parse_session_start_info_plugin_data(content)
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    assert values["model"] == "gorner_conv" and values["dataset"] == "synthetic"
    assert values["optimizer"] == "adam" and values["learning_rate"] == pytest.approx(0.003)
    assert values["batch_size"] == 16 and values["steps"] == 6 and values["epochs"] == 2
    assert values["seed"] == 5 and values["augment"] == "none"
    assert info.group_name == "board"

    traces = list((result.run_dir / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000


def test_gradient_histograms_leave_the_training_state_alone(tmp_path: Path) -> None:
    """The extra forward/backward pass in training mode must not move batch-norm statistics or
    dropout seeds: a run with histograms trains exactly as one without."""
    cfg = config.load(data=TINY | {"model": {"name": "gorner_conv_bn", "params": {"dropout": 0.5}}})
    bundle = data.build(cfg.data, cfg.seed)
    model = models.build(cfg.model.name, bundle.info.input_shape, bundle.info.num_classes, {})
    runner = StepRunner(model, keras.optimizers.Adam(), jit_compile=False)
    state = {v.path: v.numpy().copy() for v in model.non_trainable_variables}
    assert any("moving_mean" in p for p in state) and any("seed" in p for p in state)
    recorder = Recorder(
        cfg, bundle, 6, 2, tmp_path, SilentReporter(), 0, model=model, loss_fn=runner.data_loss
    )
    recorder.board.histograms(1)
    recorder.close()
    for v in model.non_trainable_variables:
        np.testing.assert_array_equal(v.numpy(), state[v.path], err_msg=v.path)
    tags = _acc(tmp_path / "logs" / "model").Tags()["tensors"]
    assert any(t.startswith("gradients/") and "_bn/beta" in t for t in tags), tags


def _get(url: str, data: dict | None = None) -> bytes:
    body = json.dumps(data).encode() if data is not None else None
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if body else {}
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=20) as r:
        return r.read()


def test_tensorboard_serves_the_run_on_localhost(run) -> None:
    _, result = run
    _, url = board.launch(result.run_dir.parent, port=0, reload_interval=1)
    assert url.startswith("http://127.0.0.1:")
    base = url.rstrip("/")
    deadline = time.monotonic() + 60
    while "board/logs/test" not in json.loads(_get(f"{base}/data/runs")):
        assert time.monotonic() < deadline, "TensorBoard did not load the run"
        time.sleep(0.5)
    query = urllib.parse.urlencode({"run": "board/logs/train", "tag": "loss"})
    points = json.loads(_get(f"{base}/data/plugin/scalars/scalars?{query}"))
    with (result.run_dir / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [p[1] for p in points] == [int(r["step"]) for r in history] == [3, 6]
    for (_, _, value), row in zip(points, history, strict=True):
        assert value == pytest.approx(float(row["loss"]), rel=1e-4)

    groups = json.loads(
        _get(
            f"{base}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )
    )["sessionGroups"]
    (group,) = groups
    assert group["hparams"]["model"] == "gorner_conv"
    metrics = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
    assert metrics[("test", "accuracy")] == pytest.approx(result.metrics["accuracy"])
    assert metrics[("train", "loss")] == pytest.approx(float(history[-1]["loss"]), rel=1e-4)


def test_board_command_prints_the_address_and_stops_on_ctrl_c(
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, result = run
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the command's wait loop: press Ctrl-C at once
        if threading.current_thread() is threading.main_thread() and seconds >= 3600:
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    out = CliRunner().invoke(app, ["board", str(result.run_dir.parent), "--port", "0"])
    assert out.exit_code == 0, out.output
    assert "http://127.0.0.1:" in out.stdout and "TensorBoard stopped" in out.stdout


def test_board_command_errors_are_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["board", str(tmp_path / "nowhere")])
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "no such runs directory" in out.stderr
