"""Scaling out on CPU: logical devices, two workers over 127.0.0.1, Slurm, mixed precision."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import yaml

from dlintro import config, distribute, launch, train
from tests.conftest import synthetic_config

CONFIG = synthetic_config(
    "dist",
    seed=3,
    num_train=256,
    num_test=64,
    batch_size=32,
    model="gorner_conv",  # no batch norm and no dropout: replicas can match exactly
    optimizer={"name": "sgd", "learning_rate": 0.05, "params": {"momentum": 0.9}},
    train={"epochs": 2, "log_every": 4},
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DLINTRO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    for key in ("DLINTRO_DATA_DIR", "TF_CONFIG"):
        env.pop(key, None)
    return env


def _dlintro(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlintro", *args],
        cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _weights(run: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


def test_cluster_source_prefers_tf_config_then_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("TF_CONFIG", *distribute.SLURM_VARS):
        monkeypatch.delenv(key, raising=False)
    assert distribute.cluster_source() == "none"
    for key in distribute.SLURM_VARS:
        monkeypatch.setenv(key, "1")
    assert distribute.cluster_source() == "Slurm"
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    assert distribute.cluster_source() == "TF_CONFIG"


def test_environment_is_json_able_facts() -> None:
    info = distribute.environment()
    assert json.loads(json.dumps(info)) == info
    assert info["tensorflow"] and info["keras"] and info["cpu_count"]
    assert info["gpus"] == len([d for d in info["physical_devices"] if ":GPU:" in d])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist")
    (path / "dist.yaml").write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def single(workdir: Path) -> train.Result:
    return train.run(config.load(workdir / "dist.yaml"), run_dir=workdir / "single")


def test_plan_line_shows_the_batch_and_learning_rate_arithmetic() -> None:
    four = SimpleNamespace(num_replicas_in_sync=4)
    cfg = config.load(
        data=CONFIG,
        overrides=[
            "data.batch_size=128", "optimizer.learning_rate=0.1",
            "distribution.batch=per_replica", "distribution.lr_scaling=linear",
        ],
    )  # fmt: skip
    plan = distribute.plan(cfg, four)
    assert plan.line() == "global batch 512 = 4 replicas x 128; lr 0.1 -> 0.4 (linear)"
    sqrt = config.load(data=CONFIG, overrides=["distribution.batch=per_replica",
                                                "distribution.lr_scaling=sqrt"])  # fmt: skip
    assert distribute.plan(sqrt, four).lr == pytest.approx(0.05 * 2)
    fixed = config.load(data=CONFIG, overrides=["distribution.lr_scaling=linear"])
    assert distribute.plan(fixed, four).line() == (
        "global batch 32 = 4 replicas x 8; lr 0.05 (not scaled)"
    )


def test_a_global_batch_must_split_evenly() -> None:
    cfg = config.load(data=CONFIG, overrides=["data.batch_size=30"])
    with pytest.raises(Exception, match="does not split evenly over 4 replicas"):
        distribute.plan(cfg, SimpleNamespace(num_replicas_in_sync=4))


def test_mirrored_on_two_logical_cpus_matches_one_device(workdir: Path, single) -> None:
    proc = _dlintro(
        "train", "dist.yaml", "--run-dir", "mirrored",
        "--set", "distribution.strategy=mirrored", "--set", "distribution.logical_cpus=2",
        cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "global batch 32 = 2 replicas x 16; lr 0.05 (not scaled)" in proc.stdout
    meta = json.loads((workdir / "mirrored" / "meta.json").read_text())
    assert meta["distribution"]["replicas"] == 2 and len(meta["distribution"]["devices"]) == 2
    # The same global batches, split in two: equal up to float summation order.
    for a, b in zip(_weights(workdir / "mirrored"), _weights(single.run_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_two_workers_train_in_lockstep_and_only_the_chief_writes(workdir: Path, single) -> None:
    cwd = workdir / "lockstep"
    cwd.mkdir()
    (cwd / "dist.yaml").write_text((workdir / "dist.yaml").read_text())
    proc = _dlintro("launch", "--workers", "2", "dist.yaml", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[worker 0] global batch 32 = 2 replicas on 2 workers x 16" in out
    chief = re.search(r"\[worker 0\] run directory: (\S+)  \(weights (\w+)\)", out)
    other = re.search(r"\[worker 1\] worker done: 16 steps in [\d.]+ s; weights (\w+)", out)
    assert chief and other, out
    assert chief.group(2) == other.group(1)  # identical weights on both workers
    run = cwd / chief.group(1)
    for name in ("config.yaml", "meta.json", "history.csv", "model.keras", "metrics.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in cwd.iterdir()) == ["dist.yaml", "runs"]
    assert [p.name for p in (cwd / "runs").iterdir()] == [run.name]  # nothing from worker 1
    for a, b in zip(_weights(run), _weights(single.run_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["distribution"]["workers"] == 2
    assert meta["weights_sha256"].startswith(chief.group(2))


def test_workers_take_the_chiefs_measured_execution_settings(workdir: Path) -> None:
    """With `auto` measured, only the chief probes; the other worker takes its choice through
    a collective, so both run the same program: identical weights."""
    cwd = workdir / "tuned"
    cwd.mkdir()
    (cwd / "dist.yaml").write_text((workdir / "dist.yaml").read_text())
    proc = _dlintro(
        "launch", "--workers", "2", "dist.yaml", cwd=cwd, DLINTRO_TUNE="on",
        XDG_CACHE_HOME=str(cwd / "cache"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    chief = re.search(r"\[worker 0\] run directory: (\S+)  \(weights (\w+)\)", out)
    other = re.search(r"\[worker 1\] worker done: 16 steps in [\d.]+ s; weights (\w+)", out)
    assert chief and other, out
    assert chief.group(2) == other.group(1)
    meta = json.loads((cwd / chief.group(1) / "meta.json").read_text())
    assert meta["execution"]["source"] == "measured" and meta["execution"]["trials"]
    assert "[worker 0] auto (jit_compile, precision, steps_per_execution): " in out


def test_a_worker_that_dies_makes_the_launcher_stop_the_others(workdir: Path) -> None:
    cwd = workdir / "dies"
    cwd.mkdir()
    (cwd / "dist.yaml").write_text((workdir / "dist.yaml").read_text())
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dlintro", "launch", "--workers", "2", "dist.yaml",
         "--steps", "100000"],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        children = subprocess.run(
            ["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True
        ).stdout.split()
        workers = sorted(int(pid) for pid in children)
        time.sleep(0.2)
    assert len(workers) == 2
    while time.monotonic() < deadline and not list(cwd.glob("runs/*/history.csv")):
        time.sleep(0.2)  # both are training
    os.kill(workers[1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    # worker 0 is stopped by the launcher, or fails by itself on losing its peer first (since
    # the CLI skips TensorFlow's teardown it may be gone by the launcher's next poll)
    assert "[launch] worker 1 failed (exit -9); " in out
    assert "stopping workers [0]" in out or "workers [0] had stopped" in out
    assert "error: launch: a worker failed" in err
    for pid in workers:  # nobody is left running
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_slurm_two_tasks_on_one_host(workdir: Path, single) -> None:
    cwd = workdir / "slurm"
    cwd.mkdir()
    (cwd / "dist.yaml").write_text((workdir / "dist.yaml").read_text())
    port = launch.free_ports(1)[0]
    procs = []
    for rank in range(2):
        env = _env(
            SLURM_JOB_ID="4242", SLURM_PROCID=str(rank), SLURM_NTASKS="2",
            SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NODELIST="localhost",
            SLURM_STEP_TASKS_PER_NODE="2", DLINTRO_SLURM_PORT=str(port),
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dlintro",
                    "train",
                    "dist.yaml",
                    "--run-dir",
                    "run",
                    "--set",
                    "distribution.strategy=multi_worker",
                ],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert "global batch 32 = 2 replicas on 2 workers x 16" in results[0][0]
    assert "worker done" in results[1][0]
    meta = json.loads((cwd / "run" / "meta.json").read_text())
    assert meta["distribution"]["workers"] == 2
    for a, b in zip(_weights(cwd / "run"), _weights(single.run_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_outputs_and_finite_losses(
    precision: str, tmp_path: Path
) -> None:
    cfg = config.load(
        data=CONFIG,
        overrides=[f"train.precision={precision}", "train.steps=12", "train.epochs=null"],
    )
    result = train.run(cfg, run_dir=tmp_path / "run")
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    compute = "float16" if precision == "mixed_float16" else "bfloat16"
    assert model.get_layer("conv1").compute_dtype == compute
    out = model(np.zeros((2, 28, 28, 1), np.float32))
    assert out.dtype == "float32"
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]
    assert history and all(np.isfinite(float(row.split(",")[2])) for row in history)
    assert np.isfinite(result.metrics["loss"])
