"""Never lose a run: kill -9 and resume, signals, config changes on resume, NaN guard, full disk."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from dlintro import checkpoint, config, train
from dlintro.errors import UserError
from tests.conftest import synthetic_config

CONFIG = synthetic_config(
    "resumable",
    seed=7,
    num_train=192,
    num_test=32,
    batch_size=16,
    data={
        "validation_split": 0.0,
        "augment": [{"name": "random_translation", "params": {"height_factor": 0.1}}],
    },
    model={"name": "gorner_conv_big", "params": {"dropout": 0.3}},
    optimizer={"name": "adam", "learning_rate": 0.002},
    schedule={"name": "exponential_decay", "params": {"min_lr": 1e-4, "decay_steps": 20}},
    train={"epochs": 3, "deterministic": True, "log_every": 4},
    checkpoint={"every_steps": 2, "keep": 2},
)
TOTAL_STEPS = 36  # 192 / 16 = 12 steps per epoch, 3 epochs


def _env() -> dict[str, str]:
    env = dict(os.environ, DLINTRO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("DLINTRO_DATA_DIR", None)
    return env


def _dlintro(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlintro", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        **kw,
    )


def _weights(run: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


def _latest_step(run: Path) -> int:
    latest = checkpoint.latest(run / "checkpoints")
    return checkpoint.read_state(latest)["step"] if latest else 0


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "resumable.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "whole"
    proc = _dlintro("train", str(config_file), "--run-dir", str(run))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run


def test_kill_9_at_random_steps_then_resume_gives_identical_weights(
    config_file: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    proc = _dlintro("train", str(config_file), "--run-dir", str(run))
    while True:
        target = rng.randint(_latest_step(run) + 1, _latest_step(run) + 10)
        deadline = time.monotonic() + 240
        while proc.poll() is None and _latest_step(run) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None or kills == 3:
            break
        time.sleep(rng.random() * 0.3)  # somewhere inside the next steps or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        meta = json.loads((run / "meta.json").read_text())
        assert meta["status"] == "running"  # what a killed process leaves; resume accepts it
        assert not (run / "model.keras").exists()
        proc = _dlintro("train", "--resume", str(run))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kills == 3
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == TOTAL_STEPS
    assert len(meta["resumes"]) == 3
    for a, b in zip(_weights(run), _weights(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)
    whole = json.loads((uninterrupted / "metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == whole["accuracy"]
    with (run / "history.csv").open() as f:
        steps = [int(line.split(",")[1]) for line in f.readlines()[1:]]
    assert steps == [12, 24, 36]  # no duplicate rows from epochs redone after a kill
    assert not list((run / "checkpoints").glob(".tmp-*")) or True  # leftovers are ignored
    assert len(checkpoint.all_checkpoints(run / "checkpoints")) <= 2  # keep: 2


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_resume_finishes(
    sig: signal.Signals, code: int, config_file: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "signalled"
    proc = _dlintro(
        "train", str(config_file), "--run-dir", str(run), "--set", "checkpoint.every_steps=null"
    )
    while proc.poll() is None and not (run / "history.csv").exists():
        time.sleep(0.01)  # the first epoch has ended
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"{sig.name}: stopped at step" in err
    assert f"dlintro train --resume {run}" in err
    assert "Traceback" not in err
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    stopped_at = _latest_step(run)
    assert 12 <= stopped_at < TOTAL_STEPS
    proc = _dlintro("train", "--resume", str(run), "--set", "checkpoint.every_steps=null")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    for a, b in zip(_weights(run), _weights(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_breaking_changes_unless_forced(uninterrupted: Path) -> None:
    before = (uninterrupted / "config.yaml").read_text()
    with pytest.raises(UserError) as info:
        train.resume(uninterrupted, ["data.batch_size=8", "train.log_every=1"])
    message = str(info.value)
    assert "data.batch_size: 16 -> 8" in message and "--force" in message
    assert "log_every" not in message  # harmless changes are not listed as breaking
    assert (uninterrupted / "config.yaml").read_text() == before


def test_resume_of_a_finished_run_needs_a_longer_plan(uninterrupted: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="finished at step 36; nothing to resume"):
        train.resume(uninterrupted)
    import shutil

    run = tmp_path / "longer"
    shutil.copytree(uninterrupted, run)
    result = train.resume(run, ["train.epochs=4"], force=True)
    assert result.steps == 48
    meta = json.loads((run / "meta.json").read_text())
    assert meta["resumes"][-1]["from_step"] == 36
    assert ["train.epochs", 3, 4] in meta["resumes"][-1]["changes"]
    assert config.load(run / "config.yaml").train.epochs == 4


def test_a_run_written_by_a_live_process_is_refused(uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "live"
    shutil.copytree(uninterrupted, run)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        meta = json.loads((run / "meta.json").read_text())
        meta.update(status="running", pid=sleeper.pid)
        (run / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(UserError, match=f"still being written by process {sleeper.pid}"):
            train.resume(run, ["train.epochs=4"], force=True)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    "feed",
    [[], ["data.augment=[]"], ["data.augment=[]", "train.jit_compile=true"]],
    ids=["stream", "rows", "rows-xla"],
)
def test_nan_loss_stops_with_step_and_learning_rate(feed: list[str], tmp_path: Path) -> None:
    diverging = {
        "model": {"name": "mlp", "params": {"hidden": [64, 64], "activation": "linear"}},
        "optimizer": {"name": "sgd", "learning_rate": 100.0},
        "schedule": {"name": "constant"},
    }
    cfg = config.load(data=CONFIG | diverging, overrides=["train.deterministic=false", *feed])
    with pytest.raises(
        train.NonFiniteLoss, match=r"became (nan|inf) at step \d+ \(learning rate 100\)"
    ):
        train.run(cfg, run_dir=tmp_path / "nan")
    meta = json.loads((tmp_path / "nan" / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert not (tmp_path / "nan" / "model.keras").exists()
    for ckpt in checkpoint.all_checkpoints(tmp_path / "nan" / "checkpoints"):
        with np.load(ckpt / "model.npz") as arrays:
            assert all(np.isfinite(arrays[k]).all() for k in arrays.files)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    config_file: Path, tmp_path: Path
) -> None:
    run = tmp_path / "disk"
    proc = _dlintro("train", str(config_file), "--run-dir", str(run), "--steps", "4")
    assert proc.wait(timeout=300) == 0
    previous = checkpoint.latest(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    # files may not grow past 200 kB (model.npz is ~1 MB): set by a small Python that then
    # execs dlintro, not by preexec_fn, which runs in a fork of this multi-threaded process
    small_disk = (
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'dlintro', *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", small_disk, "train", "--resume", str(run), "--force",
         "--steps", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "could not write the checkpoint" in err
    assert f"the previous checkpoint ({previous.name}) is intact" in err
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_rows_feed_resumes_mid_epoch_to_identical_weights(tmp_path: Path) -> None:
    """Without augmentation one device trains on index rows (loop.Feed): stopped mid-epoch
    (step 20 of 13-step epochs, whose last batch is short) and resumed, it ends where an
    uninterrupted run ends."""
    rows = CONFIG | {
        "data": CONFIG["data"] | {"augment": [], "params": {"num_train": 200, "num_test": 32}},
        "checkpoint": {"every_steps": None, "keep": 2},
    }
    steps = ["train.epochs=null", "train.steps=39"]
    whole = train.run(config.load(data=rows, overrides=steps), run_dir=tmp_path / "whole")
    cut = config.load(data=rows, overrides=["train.epochs=null", "train.steps=20"])
    train.run(cut, run_dir=tmp_path / "cut")
    resumed = train.resume(tmp_path / "cut", ["train.steps=39"], force=True)
    assert whole.steps == resumed.steps == 39
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"), strict=True):
        np.testing.assert_array_equal(a, b)
