"""One writer per run directory (issue 18, class 5): two training processes started at the same
moment into one run (a fresh --run-dir, or two --resume) give one run and one refusal naming
the other's pid; the lock dies with its process (kill -9) and leaves no file behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlintro import config, runs, train
from dlintro.errors import UserError
from dlintro.runlock import LOCK_NAME, RunLock
from tests.conftest import synthetic_config

# long enough that the first process still trains when the second claims the run; the test
# stops it with SIGTERM once the second has been refused
LONG = synthetic_config(
    "locked",
    seed=5,
    num_train=64,
    num_test=16,
    batch_size=16,
    model={"name": "mlp", "params": {"hidden": [8]}},
    data={"augment": []},
    train={"steps": 1_000_000, "log_every": 1000},
    checkpoint={"every_minutes": None, "at_epoch_end": False},
    tensorboard={"histogram_every_epochs": 0, "images": False},
)

HOLD = """
import sys, time
from dlintro.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _dlintro(*args: object, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, DLINTRO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", DLINTRO_TUNE="off")
    return subprocess.Popen(
        [sys.executable, "-m", "dlintro", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
    )  # fmt: skip


def _race(
    argv: list[object], cwd: Path, ready: Callable[[int], bool]
) -> tuple[subprocess.Popen[str], str]:
    """Start two identical processes at the same moment; return the one still training and
    the refused one's stderr, after stopping the winner with SIGTERM once `ready(its pid)`
    (stopped while still starting, a winner rightly leaves the run as it was)."""
    procs = [_dlintro(*argv, cwd=cwd) for _ in range(2)]
    deadline = time.monotonic() + 240
    while all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "neither process was refused"
        time.sleep(0.2)
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    _, err = loser.communicate()
    assert loser.returncode == 2, err
    while not ready(winner.pid):
        assert winner.poll() is None, "the winner stopped too"
        assert time.monotonic() < deadline, "the winner never started training"
        time.sleep(0.2)
    winner.send_signal(signal.SIGTERM)
    winner.communicate(timeout=120)
    return winner, err


def _meta(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "meta.json").read_text())
    except (OSError, ValueError):  # not there yet
        return {}


@pytest.mark.slow
def test_two_fresh_runs_into_one_run_dir(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(LONG))
    winner, err = _race(
        ["train", "c.yaml", "--run-dir", "run"],
        tmp_path,
        lambda pid: (tmp_path / "run" / "history.csv").exists(),  # an epoch done: in the loop
    )
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err == (
        f"error: run: the run is still being written by process {winner.pid} (it holds "
        f"run/{LOCK_NAME}); wait or stop it\n"
    )
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["pid"] == winner.pid and meta["status"] == "interrupted"
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # gone with its holder


@pytest.mark.slow
def test_two_resumes_of_one_run(tmp_path: Path) -> None:
    short = LONG | {"train": {"steps": 4}}
    run = train.run(config.load(data=short), run_dir=tmp_path / "run").run_dir
    argv: list[object] = ["train", "--resume", "run", "--steps", "1000000", "--force"]
    winner, err = _race(argv, tmp_path, lambda pid: _meta(run).get("pid") == pid)
    assert err.count("\n") == 1 and f"still being written by process {winner.pid}" in err
    meta = json.loads((run / "meta.json").read_text())
    assert len(meta["resumes"]) == 1 and meta["pid"] == winner.pid  # one resume, the winner's


def test_a_held_lock_refuses_and_names_its_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match=f"still being written by process {holder.pid} "):
            RunLock(run).acquire()
        with pytest.raises(UserError, match=f"by process {holder.pid} "):
            runs.claim("x", run)  # a fresh --run-dir that another process holds
        assert (run / LOCK_NAME).read_text() == f"{holder.pid}\n"  # the refusal changed nothing
    finally:
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait()
    with RunLock(run) as lock:  # the left lock file is not a stale lock
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert lock.fd is not None
    assert not (run / LOCK_NAME).exists()
    claimed = runs.claim("x", run)  # only a lock file left: the directory is still free
    claimed.release()
    assert list(run.iterdir()) == []


def test_a_claimed_directory_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    with pytest.raises(UserError, match="exists and is not empty"):
        runs.claim("x", run)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_resume_holds_the_lock_and_leaves_none(tmp_path: Path) -> None:
    short = LONG | {"train": {"steps": 4}}
    run = train.run(config.load(data=short), run_dir=tmp_path / "run").run_dir
    assert not (run / LOCK_NAME).exists()
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with RunLock(copy), pytest.raises(UserError, match=f"process {os.getpid()} "):
        train.resume(copy, ["train.steps=8"], force=True)
    result = train.resume(copy, ["train.steps=8"], force=True)
    assert result.steps == 8 and not (copy / LOCK_NAME).exists()
