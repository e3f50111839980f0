"""`dlintro runs` and `dlintro compare`: statuses (a killed run among them), numbers read from a
run's files, JSON, and tables that fit 80 columns."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlintro import config, runlist, runs, train
from dlintro.cli import app
from tests.conftest import synthetic_config

TINY = synthetic_config(
    "tiny",
    seed=4,
    num_train=64,
    num_test=32,
    batch_size=16,
    data={"validation_split": 0.25},
    train={"epochs": 2},
    tensorboard={"histogram_every_epochs": 0, "images": False},
)
# finished, killed, running, failed (the names that `dlintro train` gives)
NAMES = (
    "mnist_conv-20260101-120000",
    "mnist_conv_big-20260101-130000",
    "mnist_conv-20260102-090000",
    "mnist_conv-20260102-100000",
)


def _edit_meta(run: Path, drop: tuple[str, ...] = (), **fields: object) -> None:
    meta = json.loads((run / "meta.json").read_text())
    for key in drop:
        meta.pop(key, None)
    meta.update(fields)
    (run / "meta.json").write_text(json.dumps(meta))


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real finished run and three copies made to look killed, running and failed."""
    base = tmp_path_factory.mktemp("runs")
    finished = train.run(config.load(data=TINY), run_dir=base / NAMES[0]).run_dir
    for name in NAMES[1:]:
        shutil.copytree(finished, base / name)
    unfinished = (
        "ended", "wall_seconds", "train_seconds", "images_per_second", "steps", "test_accuracy",
        "test_loss",
    )  # fmt: skip
    killed = base / NAMES[1]  # SIGKILL after the first epoch: no final model or metrics
    _edit_meta(killed, drop=unfinished, status="running", pid=_dead_pid())
    (killed / "metrics.json").unlink()
    (killed / "model.keras").unlink()
    with (killed / "history.csv").open() as f:
        lines = f.read().splitlines()
    (killed / "history.csv").write_text("\n".join(lines[:2]) + "\n")
    shutil.rmtree(killed / "checkpoints" / "step-000000006")  # killed before it was written
    _edit_meta(base / NAMES[2], drop=unfinished, status="running", pid=os.getpid())
    _edit_meta(base / NAMES[3], status="failed", error="the loss became nan")
    edited = yaml.safe_load((base / NAMES[3] / "config.yaml").read_text())
    edited["optimizer"]["learning_rate"] = 0.5
    (base / NAMES[3] / "config.yaml").write_text(yaml.safe_dump(edited))
    return base


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def invoke(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_list_runs_reads_status_and_numbers(root: Path) -> None:
    rows = {r["name"]: r for r in runlist.list_runs(root)}
    assert sorted(rows) == sorted(NAMES)
    a, killed, running, failed = (rows[n] for n in NAMES)
    assert [a["status"], killed["status"], running["status"], failed["status"]] == [
        "finished", "interrupted (killed)", "running", "failed",
    ]  # fmt: skip
    metrics = json.loads((root / NAMES[0] / "metrics.json").read_text())
    history = _history(root / NAMES[0])
    assert a["test_accuracy"] == metrics["accuracy"]
    assert a["best_val_accuracy"] == max(float(r["val_accuracy"]) for r in history)
    assert a["final_train_loss"] == float(history[-1]["loss"])
    assert a["steps"] == a["total_steps"] == 6 and a["epochs"] == 2
    assert a["model"] == "gorner_conv" and a["dataset"] == "synthetic"
    assert a["wall_seconds"] > 0
    assert killed["test_accuracy"] is None and killed["steps"] == 3 and killed["epochs"] == 1
    assert killed["best_val_accuracy"] == float(history[0]["val_accuracy"])
    assert killed["wall_seconds"] is None
    assert running["wall_seconds"] > 0  # still going: time since it started


def test_a_reused_pid_is_not_the_run(root: Path) -> None:
    me = os.getpid()
    assert runs.process_alive(me, None, since=time.time()) is True
    # our process started long after a run that began a day ago: the pid was reused
    assert runs.process_alive(me, None, since=time.time() - 86400) is False
    assert runs.process_alive(_dead_pid(), None) is False
    assert runs.process_alive(me, "another-host.example") is None


def test_runs_command_fits_80_columns_and_prints_json(root: Path) -> None:
    out = invoke("runs", root)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, out.stdout
    text = out.stdout
    for name in NAMES:
        assert name in text
    assert "interrupted" in text and "(killed)" in text and "gorner_conv on synthetic" in text
    finished = next(line for line in lines if line.startswith(NAMES[0]))
    metrics = json.loads((root / NAMES[0] / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.2%}" in finished and "finished" in finished

    out = invoke("runs", root, "--json")
    assert out.exit_code == 0

    def settled(rows: list[dict]) -> list[dict]:  # a running run's wall time grows meanwhile
        return [{k: v for k, v in r.items() if not (k == "wall_seconds" and
                 r["status"] == "running")} for r in rows]  # fmt: skip

    listed = json.loads(out.stdout)
    assert settled(listed) == settled(json.loads(json.dumps(runlist.list_runs(root))))
    running = [r for r in listed if r["status"] == "running"]
    assert running and all(r["wall_seconds"] > 0 for r in running)


def test_compare_shows_config_differences_and_results(root: Path) -> None:
    a, d = root / NAMES[0], root / NAMES[3]
    out = invoke("compare", a, d, "--json")
    assert out.exit_code == 0, out.output
    c = json.loads(out.stdout)
    assert c["config_diff"] == [
        {"key": "optimizer.learning_rate", "a": 0.001, "b": 0.5, "values": [0.001, 0.5]}
    ]
    results = {m["metric"]: (m["a"], m["b"]) for m in c["metrics"]}
    accuracy = json.loads((a / "metrics.json").read_text())["accuracy"]
    assert results["test_accuracy"] == (accuracy, accuracy)
    assert c["a"]["status"] == "finished" and c["b"]["status"] == "failed"

    out = invoke("compare", a, root / NAMES[1])
    assert out.exit_code == 0, out.output
    assert max(len(line.rstrip()) for line in out.stdout.splitlines()) <= 80, out.stdout
    assert "the configs are the same" in out.stdout
    assert "interrupted (killed)" in out.stdout
    row = next(line for line in out.stdout.splitlines() if "test accuracy" in line)
    assert f"{accuracy:.2%}" in row and row.rstrip().endswith("-")  # no result for B

    out = invoke("compare", a, d)
    assert "optimizer.learning_rate" in out.stdout and "0.5" in out.stdout


def test_errors_are_one_line(root: Path, tmp_path: Path) -> None:
    for args in (("runs", tmp_path / "nowhere"), ("compare", root / NAMES[0], tmp_path)):
        out = invoke(*args)
        assert out.exit_code == 2 and out.stdout == "", out.output
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    out = invoke("runs", tmp_path)
    assert out.exit_code == 0 and out.stdout.startswith("no runs in")
