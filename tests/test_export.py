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


# ----------------------------------------------------------------------------- outside dlintro

PLAIN_KERAS = """
import sys
import numpy as np
import keras
out = {}
for i, path in enumerate(sys.argv[2:]):
    model = keras.saving.load_model(path)
    out[f"p{i}"] = model.predict(np.load(sys.argv[1])["x"], verbose=0)
assert "dlintro" not in sys.modules, "dlintro was imported"
np.savez(sys.argv[1] + ".out.npz", **out)
"""


def _plain_keras(tmp_path: Path, x: np.ndarray, *models: Path) -> list[np.ndarray]:
    """Probabilities of .keras files loaded by plain Keras in a fresh interpreter that never
    imports dlintro (run from a directory where dlintro is not importable from the cwd)."""
    images = tmp_path / "images.npz"
    np.savez(images, x=x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-c", PLAIN_KERAS, str(images), *map(str, models)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(str(images) + ".out.npz") as f:
        return [f[f"p{i}"] for i in range(len(models))]


def test_inference_keras_loads_in_plain_keras_and_takes_raw_images(run: Path, tmp_path) -> None:
    """The run's inference.keras (standardize: per-channel mean and std) and a keras export:
    plain Keras, raw uint8 images, the run's own probabilities."""
    spec = run_spec(run)
    x = load_dataset("synthetic", Path("."), spec.config.data.params)[1].x_test
    target = tmp_path / "exported.keras"
    code, _, err = _cli("export", run, "--format", "keras", "--out", target)
    assert code == 0, err
    inference, exported = _plain_keras(tmp_path, x, run / "inference.keras", target)
    reference = probabilities(spec, load_model(run / "model.keras"), x)
    np.testing.assert_allclose(inference, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(exported, reference, rtol=0, atol=1e-6)
    wrong = load_model(run / "model.keras").predict(x / 255.0, verbose=0)  # the old trap
    assert np.abs(wrong - reference).max() > 1e-2


def test_a_cifar_resnet_becomes_built_in_layers_only(tmp_path: Path) -> None:
    """ResNet option A's ShortcutPadding and dlintro's BatchNorm are replaced by built-in layers
    computing exactly the same, so plain Keras loads the model without dlintro."""
    import keras

    from dlintro import artifacts, models
    from dlintro.models.batchnorm import BatchNorm
    from dlintro.models.resnet import ShortcutPadding

    net = models.build("resnet_cifar", (16, 16, 3), 4, {"depth": 8})
    assert any(isinstance(layer, ShortcutPadding) for layer in artifacts.all_layers(net))
    x = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    norm = {"mode": "standardize", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    inference = artifacts.inference_model(net, (16, 16, 3), norm)
    assert not any(isinstance(layer, ShortcutPadding) for layer in artifacts.all_layers(inference))
    kinds = {type(layer) for layer in artifacts.all_layers(inference)}
    assert BatchNorm in {type(layer) for layer in artifacts.all_layers(net)}
    assert BatchNorm not in kinds and keras.layers.BatchNormalization in kinds
    expected = artifacts.wrap(net, (16, 16, 3), norm).predict(x, verbose=0)
    np.testing.assert_array_equal(inference.predict(x, verbose=0), expected)
    artifacts.save_keras(inference, tmp_path / "resnet.keras")
    (loaded,) = _plain_keras(tmp_path, x, tmp_path / "resnet.keras")
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- without the data


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run on an image folder that is deleted after training: only the run directory is left."""
    import shutil

    import tensorflow as tf

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for cls, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
            (root / "photos" / split / cls).mkdir(parents=True)
            for i in range(count):
                img = np.clip(rng.normal(colour, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                path = root / "photos" / split / cls / f"{i}.png"
                path.write_bytes(tf.io.encode_png(img).numpy())
    cfg = config.load(
        data={
            "name": "folder",
            "data": {
                "dataset": "image_folder",
                "params": {"path": str(root / "photos"), "image_size": [16, 16]},
                "batch_size": 8,
                "normalize": "standardize",
            },
            "model": {"name": "plain_convnet", "params": {"stages": [[8]], "dense": [16]}},
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "train": {"epochs": 6, "jit_compile": False},
        }
    )
    run = train.run(cfg, run_dir=root / "run").run_dir
    shutil.rmtree(root / "photos")
    return run


def test_export_needs_only_the_run_directory(folder_run: Path, tmp_path: Path) -> None:
    """The dataset is gone: the parity check and int8 calibration use sample.npz."""
    with np.load(folder_run / "sample.npz", allow_pickle=False) as f:
        assert f["test_images"].shape == (16, 16, 16, 3) and f["calibration_images"].shape[0] == 48
    for name, args in (("m.keras", ["--format", "keras"]),
                       ("m.tflite", ["--format", "tflite", "--quantize", "int8"])):  # fmt: skip
        code, out, err = _cli("export", folder_run, *args, "--out", tmp_path / name)
        assert code == 0, out + err
        assert "on 16 image_folder test images saved with the run" in out and "passed" in out
    record = json.loads(export.info_path(tmp_path / "m.keras").read_text())
    assert record["parity"]["images"] == "image_folder test images saved with the run"


def test_without_sample_and_data_export_says_why(folder_run: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folder_run, bare)
    (bare / "sample.npz").unlink()
    code, out, err = _cli("export", bare, "--format", "keras")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{bare}: no test images for the parity check: the run has no sample.npz" in err
    assert "give --data-dir, or --no-check to export without the check" in err
    assert not (bare / "export").exists()
    code, out, err = _cli("export", bare, "--format", "tflite", "--quantize", "int8", "--no-check")
    assert code == 2 and "no training images for int8" in err and "--no-check" not in err
    code, out, err = _cli("export", bare, "--format", "keras", "--no-check")
    assert code == 0, err
    assert "parity: not checked (--no-check: the artifact was not compared" in out
    record = json.loads(export.info_path(bare / "export" / "model.keras").read_text())
    assert record["parity"] is None and record["parity_skipped"].startswith("--no-check")


def test_a_run_without_sample_checks_on_the_dataset(run: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("export"))
    (old / "sample.npz").unlink()
    code, out, err = _cli("export", old, "--format", "keras")
    assert code == 0, err
    assert "on 32 synthetic test images (keras)" in out and "passed" in out


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a zip", "unreadable"),
        ("object", "unreadable (Object arrays cannot be loaded when allow_pickle=False)"),
        ("shape", "test_images are uint8 [2, 5, 5, 3], expected uint8 [N, 12, 12, 3]"),
    ],
)
def test_a_damaged_sample_is_named(run: Path, tmp_path: Path, content, why: str) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    sample = copy / "sample.npz"
    if isinstance(content, bytes):
        sample.write_bytes(content)
    else:
        bad = np.array([{"x": 1}], dtype=object) if content == "object" else np.zeros((2, 5, 5, 3))
        images = bad.astype(np.uint8) if content == "shape" else bad
        np.savez(sample, test_images=images, test_labels=np.zeros(2), calibration_images=images)
    code, _, err = _cli("export", copy, "--format", "keras")
    assert code == 2 and err.count("\n") == 1 and f"{sample}: {why}" in err, err


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real MNIST run with standardize (the speed run's net, 120 steps)."""
    from tests.conftest import CONFIGS, SHARED_DATASETS

    if not (SHARED_DATASETS / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_DATASETS}/mnist")
    cfg = config.load(
        CONFIGS / "mnist_fast.yaml",
        ["train.epochs=null", "train.steps=120", "train.jit_compile=false"],
    )
    run = tmp_path_factory.mktemp("mnist") / "fast"
    return train.run(cfg, run_dir=run, data_dir=SHARED_DATASETS).run_dir


@pytest.mark.slow
def test_mnist_inference_keras_in_plain_keras_matches_eval(mnist_run: Path, mnist_dir: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """Done means: raw uint8 MNIST test images into inference.keras loaded by plain Keras give
    the run's own accuracy on those images, image by image."""
    _, arrays = load_dataset("mnist", mnist_dir)
    x, y = arrays.x_test[:400], arrays.y_test[:400]
    (plain,) = _plain_keras(tmp_path, x, mnist_run / "inference.keras")
    spec = run_spec(mnist_run)
    assert spec.normalization["mode"] == "standardize"
    own = probabilities(spec, load_model(mnist_run / "model.keras"), x)
    assert plain.argmax(axis=1).tolist() == own.argmax(axis=1).tolist()
    accuracy = np.mean(plain.argmax(axis=1) == y)
    # > 0.6 only: after 120 steps batch norm's moving statistics are still young
    assert accuracy == np.mean(own.argmax(axis=1) == y) > 0.6
    np.testing.assert_allclose(plain, own, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_mnist_export_with_the_data_directory_empty(mnist_run: Path, tmp_path: Path) -> None:
    """Done means: a machine with the run directory only (DLINTRO_DATA_DIR empty) exports."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DLINTRO_DEBUG", "COLUMNS")}
    env["DLINTRO_DATA_DIR"] = str(empty)
    command = [sys.executable, "-m", "dlintro", "export", str(mnist_run), "--format", "tflite",
               "--out", str(tmp_path / "m.tflite")]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on 300 mnist test images saved with the run" in proc.stdout and "passed" in proc.stdout
    (mnist_run / "sample.npz").rename(tmp_path / "aside.npz")
    try:
        proc = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=300,
                              env=env)  # fmt: skip
    finally:
        (tmp_path / "aside.npz").rename(mnist_run / "sample.npz")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no test images for the parity check: the run has no sample.npz" in proc.stderr
    assert "mnist: missing" in proc.stderr and "--no-check" in proc.stderr
