"""The `dlintro` command as a real process: `python -m dlintro` and the installed script.

These check what CliRunner cannot: the entry points, the real exit codes and streams, that
`--help` never imports TensorFlow, and a whole (tiny) training run in a fresh interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dlintro import __version__
from tests.conftest import synthetic_yaml, write_config

SYNTHETIC = synthetic_yaml("tiny", "train: {epochs: 2}")


def _script() -> str:
    beside = Path(sys.executable).with_name("dlintro")
    if beside.is_file():
        return str(beside)
    found = shutil.which("dlintro")
    if found is None:
        pytest.skip("the dlintro script is not installed")
    return found


ENTRY_POINTS = {
    "module": lambda: [sys.executable, "-m", "dlintro"],
    "script": lambda: [_script()],
}


def run(
    entry: str, *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout=120
) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)  # includes the offline settings of the autouse fixture
    environ.pop("DLINTRO_DEBUG", None)
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI itself must keep TensorFlow quiet
    environ.pop("COLUMNS", None)  # rich's default width (80) for pipes
    environ.update(env or {})
    return subprocess.run(
        [*ENTRY_POINTS[entry](), *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_version(entry: str, tmp_path: Path) -> None:
    proc = run(entry, "--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"dlintro {__version__}\n"
    assert proc.stderr == ""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help(entry: str, tmp_path: Path) -> None:
    proc = run(entry, "--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "eval", "summary", "models", "datasets"):
        assert f" {command} " in proc.stdout
    assert "Example" in proc.stdout
    assert proc.stderr == ""


def test_help_does_not_import_tensorflow(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlintro", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert "import time:" in proc.stderr  # -X importtime did report
    assert "| dlintro.cli" in proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert not [m for m in imported if m.split(".")[0] in {"tensorflow", "keras", "numpy"}]
    assert "tensorflow" not in proc.stderr


def test_importing_the_cli_does_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys, dlintro.cli, dlintro.config, dlintro.registry, dlintro.errors; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


def test_the_quiet_import_hook_is_installed_once(tmp_path: Path) -> None:
    code = (
        "import sys; from dlintro.quiet import QuietTensorFlowImport, quiet_tensorflow; "
        "quiet_tensorflow(); quiet_tensorflow(); "
        "print(sum(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path), "
        "'tensorflow' in sys.modules)"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1 False\n"


BAD_CONFIGS = {
    # found by the schema: no TensorFlow import at all
    "schema": (
        "name: t\nmodel: {name: mlp5}\ndata:\n  batch_size: 0\n",
        "{path}:4: data.batch_size = 0: input should be greater than or equal to 1",
    ),
    # found by the registries, after TensorFlow is imported: its start-up logs must stay quiet
    "registry": (
        "name: t\nmodel: {name: mlp5, params: {dropuot: 0.1}}\n",
        "{path}:2: model.params.dropuot: unknown parameter of model 'mlp5' "
        "(did you mean 'dropout'?)",
    ),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", BAD_CONFIGS)
def test_bad_config_one_line_exit_2(entry: str, kind: str, tmp_path: Path) -> None:
    text, message = BAD_CONFIGS[kind]
    path = write_config(tmp_path / "bad.yaml", text)
    proc = run(entry, "train", path, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"error: {message.format(path=path)}"]
    assert proc.stderr.endswith("\n")
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["--debug", "DLINTRO_DEBUG"])
def test_debug_shows_the_traceback(how: str, tmp_path: Path) -> None:
    text, message = BAD_CONFIGS["schema"]
    path = write_config(tmp_path / "bad.yaml", text)
    if how == "--debug":
        proc = run("module", "--debug", "train", path, cwd=tmp_path)
    else:
        proc = run("module", "train", path, cwd=tmp_path, env={"DLINTRO_DEBUG": "1"})
    assert proc.returncode == 1  # an uncaught exception
    assert "Traceback (most recent call last):" in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"dlintro.errors.UserError: {message.format(path=path)}"
    )
    assert "error: " not in proc.stderr.splitlines()[0]


@dataclass(frozen=True)
class ProcessRun:
    run_dir: Path
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def process_run(tmp_path_factory: pytest.TempPathFactory) -> ProcessRun:
    """One 3-step synthetic training in a fresh interpreter, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("process_run")
    config = write_config(tmp / "tiny.yaml", SYNTHETIC)
    # a long run directory path, as runs/<name>-<time> under a deep checkout would give
    run_dir = tmp / "tmp" / "a-rather-long-directory-name-for-the-runs" / "run"
    proc = run(
        "module", "train", config, "--steps", "3", "--run-dir", run_dir, cwd=tmp,
        env={"DLINTRO_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp / "cache")},
    )  # fmt: skip
    return ProcessRun(run_dir, proc)


def test_train_as_a_real_process(process_run: ProcessRun) -> None:
    proc, run_dir = process_run.proc, process_run.run_dir
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "finished"
    assert meta["steps"] == 3
    assert meta["pid"] != os.getpid()
    assert f"test accuracy {metrics['accuracy']:.2%}" in proc.stdout
    assert "(32 test images)" in proc.stdout
    assert "3 steps, 0.75 epochs in " in proc.stdout
    compact = "".join(proc.stdout.split())  # rich may wrap long lines (even inside words)
    assert f"rundirectory:{run_dir}" in compact
    assert f"next:dlintroeval{run_dir}" in compact
    assert (run_dir / "model.keras").is_file()
    assert not (run_dir.parents[2] / "runs").exists()


def test_train_prints_the_run_directory_on_one_line(process_run: ProcessRun) -> None:
    assert process_run.proc.returncode == 0, process_run.proc.stderr
    lines = process_run.proc.stdout.splitlines()
    weights = hashlib.sha256(
        b"".join(np.ascontiguousarray(w).tobytes() for w in _final_weights(process_run.run_dir))
    ).hexdigest()
    assert f"run directory: {process_run.run_dir}  (weights {weights[:16]})" in lines
    assert f"next: dlintro eval {process_run.run_dir}" in lines


def _final_weights(run_dir: Path) -> list:
    import keras

    return keras.saving.load_model(run_dir / "model.keras", compile=False).get_weights()


@pytest.mark.parametrize(
    ("code", "status", "stderr"), [(None, 0, ""), (0, 0, ""), (3, 3, ""), ("bye", 1, "bye\n")]
)
def test_exit_now_keeps_sys_exit_meaning_and_flushes(code, status, stderr, tmp_path: Path):
    """The CLI ends a TensorFlow process with os._exit (its teardown took most of a second):
    sys.exit's status for every kind of code, and nothing left in the streams' buffers."""
    script = (
        "import sys\n"
        "from dlintro.cli import exit_now\n"
        "sys.stdout.reconfigure(line_buffering=False)\n"
        "print('unflushed', end='')\n"
        f"exit_now({code!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (status, "unflushed", stderr)


def test_an_error_after_tensorflow_started_is_one_line_exit_2(tmp_path: Path) -> None:
    """A data error found once TensorFlow is loaded (the fast exit's path) keeps exit code 2,
    its one line, and writes nothing."""
    config = write_config(tmp_path / "tiny.yaml", SYNTHETIC)
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = run(
        "module", "train", config, "--set", "data.dataset=mnist", "--data-dir", empty,
        "--run-dir", tmp_path / "run", cwd=tmp_path, env={"DLINTRO_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "mnist" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
