"""`dlintro export`: every format with the preprocessing built in, checked against Keras."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlintro import config, export, train
from dlintro.cli import app
from dlintro.data.sources import load_dataset
from dlintro.predict import probabilities
from dlintro.runs import load_model, run_spec

ONNX_MISSING = [m for m in ("tf2onnx", "onnx", "onnxruntime") if not importlib.util.find_spec(m)]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING),
    reason=f"optional ONNX packages missing ({', '.join(ONNX_MISSING)}): pip install "
    "'dlintro[export]'",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small conv net on colour images with standardize (per-channel mean and std), trained
    until it is confident, so that int8 rounding does not flip near-ties."""
    cfg = config.load(
        data={
            "name": "exp",
            "seed": 2,
            "data": {
                "dataset": "synthetic",
                "params": {
                    "num_train": 64,
                    "num_test": 32,
                    "image_size": 12,
                    "channels": 3,
                    "num_classes": 4,
                },
                "batch_size": 16,
                "normalize": "standardize",
            },
            "model": {"name": "gorner_conv"},
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "train": {"steps": 24, "jit_compile": False},
        }
    )
    return train.run(cfg, run_dir=tmp_path_factory.mktemp("e") / "run").run_dir


def _cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_wrapper_applies_the_saved_normalization_exactly(run: Path) -> None:
    spec = run_spec(run)
    assert spec.normalization["mode"] == "standardize" and spec.normalization["mean"][0] > 0
    model = load_model(run / "model.keras")
    x = load_dataset("synthetic", Path("."), spec.config.data.params)[1].x_test
    wrapper = export.wrap(model, spec.input_shape, spec.normalization)
    assert wrapper.input.dtype == "uint8"
    reference = probabilities(spec, model, x)
    np.testing.assert_allclose(wrapper.predict_on_batch(x), reference, rtol=0, atol=1e-6)


FORMATS = [
    ("keras", None),
    ("savedmodel", None),
    ("tflite", None),
    ("tflite", "float16"),
    ("tflite", "int8"),
    pytest.param("onnx", None, marks=needs_onnx),
]


@pytest.mark.parametrize(("fmt", "quantize"), FORMATS, ids=lambda v: v or "float32")
def test_every_format_passes_its_parity_check_from_the_cli(run: Path, fmt: str, quantize):
    args = ["export", run, "--format", fmt] + (["--quantize", quantize] if quantize else [])
    code, out, err = _cli(*args)
    assert code == 0, out + err
    path = export.default_path(run, fmt, quantize)
    assert path.exists() and f"wrote {path} " in out
    assert "parity with the Keras model on 32 synthetic test images" in out and "passed" in out
    record = json.loads(export.info_path(path).read_text())
    assert record["input"] == {**record["input"], "dtype": "uint8", "shape": [None, 12, 12, 3]}
    assert record["class_names"] == [f"class_{i}" for i in range(4)]
    parity = record["parity"]
    tolerance = export.TOLERANCES[quantize or "float32"]
    assert parity["passed"] and parity["num_images"] == 32
    assert parity["max_abs_diff"] <= tolerance.max_abs_diff
    assert parity["top1_agreement"] >= tolerance.min_top1_agreement
    if quantize is None:
        assert parity["max_abs_diff"] < 1e-5  # the same float32 function


def test_no_overwrite_without_force(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "m.keras"
    code, _, err = _cli("export", run, "--format", "keras", "--out", target)
    assert code == 0, err
    before = {p.name: _digest(p) for p in target.parent.iterdir()}
    assert set(before) == {"m.keras", "m.keras.json"}
    code, _, err = _cli("export", run, "--format", "keras", "--out", target)
    assert code == 2 and f"{target}: exists; pass --force to overwrite it" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: _digest(p) for p in target.parent.iterdir()} == before
    os.utime(target, (0, 0))
    code, _, err = _cli("export", run, "--format", "keras", "--out", target, "--force")
    assert code == 0, err
    assert target.stat().st_mtime > 0 and sorted(p.name for p in target.parent.iterdir()) == [
        "m.keras",
        "m.keras.json",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "pickle"], "--format 'pickle': valid: keras, savedmodel, tflite, onnx"),
        ([], "give --format keras|savedmodel|tflite|onnx"),
        (["--format", "onnx", "--quantize", "int8"], "applies to --format tflite only"),
        (["--format", "tflite", "--quantize", "int4"], "--quantize 'int4': valid: float16, int8"),
        (["--format", "keras", "--out", "model.h5"], "model.h5: a Keras model file needs"),
    ],
)
def test_bad_requests_are_one_line(run: Path, args: list[str], expected: str) -> None:
    code, _, err = _cli("export", run, *args)
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_a_failed_parity_check_exits_1(run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(export.TOLERANCES, "float32", export.Tolerance(-1.0, 1.0))
    target = tmp_path / "m.keras"
    code, out, err = _cli("export", run, "--format", "keras", "--out", target)
    assert code == 1 and "FAILED" in out
    assert f"{target}: parity check failed" in err and err.count("\n") == 1
    assert not json.loads(export.info_path(target).read_text())["parity"]["passed"]


def test_the_check_catches_a_preprocessing_mistake(run: Path) -> None:
    """A wrapper that forgot the mean and std would not pass the float32 tolerance."""
    spec = run_spec(run)
    model = load_model(run / "model.keras")
    x = load_dataset("synthetic", Path("."), spec.config.data.params)[1].x_test
    c = spec.input_shape[-1]
    wrong = export.wrap(model, spec.input_shape, {"mode": "unit", "mean": [0] * c, "std": [1] * c})
    parity = export.compare(
        probabilities(spec, model, x), wrong.predict_on_batch(x), export.TOLERANCES["float32"],
        "synthetic", "keras",
    )  # fmt: skip
    assert not parity.passed and parity.max_abs_diff > 1e-3


def test_export_from_a_real_process(run: Path, tmp_path: Path) -> None:
    """`python -m dlintro export` in a fresh interpreter: artifact, parity line, exit 0."""
    target = tmp_path / "model.tflite"
    env = {k: v for k, v in os.environ.items() if k not in ("DLINTRO_DEBUG", "COLUMNS")}
    command = [sys.executable, "-m", "dlintro", "export", str(run), "--format", "tflite",
               "--quantize", "int8", "--out", str(target)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"wrote {target}" in proc.stdout and "passed" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert target.is_file() and export.info_path(target).is_file()
