"""Export a trained run for use elsewhere (Keras, SavedModel, TFLite, ONNX), with a parity check.

Every artifact has the preprocessing built in: a wrapper model takes uint8 images [batch, H, W, C]
of the run's input shape (0..255, channels last) and applies the run's saved normalization,
`(x * scale - mean) / std`, with the same float32 operations as the training pipeline, then the
trained model; the output is the class probabilities float32 [batch, classes]. Decoding,
channel conversion, resizing and (for digit photos) the MNIST way stay outside, as `dlintro
predict` does them: the JSON file next to the artifact (`<artifact>.json`) says exactly what
(`preprocess`, with dlintro/preprocess.py's NumPy/Pillow code) and records the input, output,
class names, normalization and the parity result. A `keras` artifact has dlintro's custom layers
(the test-time views included) replaced by built-in ones where they can be (builtin_layers).

After writing, the artifact is loaded with its own runtime (keras, tf.saved_model, the LiteRT
interpreter, onnxruntime) and compared with the run's Keras model fed by the run's test pipeline,
on up to PARITY_IMAGES test images (the run's sample.npz, or the dataset for runs without one:
artifacts.check_images; `check=False` skips it): the largest absolute difference of any
probability, and the share of images whose top-1 class agrees. TOLERANCES says what passes:

- float32 artifacts compute the same float32 function; only operation order and kernel fusion
  differ, which moves probabilities by about 1e-7 (measured: at most 1e-6 on MNIST), so 1e-4
  and 100% top-1 agreement leave a wide margin while catching any preprocessing mistake
  (a wrong scale or mean moves probabilities by far more than 1e-4).
- TFLite float16 stores the weights in half precision (relative error 2^-11, about 5e-4); the
  measured difference is about 3e-4; 1e-2 and 99% allow a near-tie to flip.
- TFLite int8 quantizes weights and activations to 256 levels (the output too, in steps of
  1/256 = 0.004) calibrated on REPRESENTATIVE_IMAGES training images; measured 0.024 and 99.7%
  on MNIST after 300 steps; 0.1 and 97% follow TFLite's own guidance that int8 costs about
  a point of accuracy, with room for images near the decision boundary.
- A mixed-precision run (train.precision mixed_*) has a Keras reference that itself computes in
  half precision, so it is held to the float16 tolerance; its TFLite export computes in float32
  (TFLite has no float16 convolutions).

TensorFlow, Keras and the optional runtimes are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlintro.artifacts import (
    INPUT_NAME,
    PARITY_IMAGES,
    all_layers,
    builtin_layers,
    check_images,
    wrap,
)
from dlintro.errors import UserError
from dlintro.runtimes import RUNTIMES, quiet, run_artifact, tflite_interpreter_name

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
EXTRA = "pip install 'dlintro[export]'"


@dataclass(frozen=True)
class Tolerance:
    """What a parity check must meet: max |p_artifact - p_keras| and top-1 agreement."""

    max_abs_diff: float
    min_top1_agreement: float


TOLERANCES = {
    "float32": Tolerance(1e-4, 1.0),
    "float16": Tolerance(1e-2, 0.99),
    "int8": Tolerance(0.1, 0.97),
}


@dataclass(frozen=True)
class Parity:
    """The result of comparing an artifact with the Keras model."""

    num_images: int
    images: str  # where they came from
    runtime: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: Tolerance
    passed: bool


@dataclass(frozen=True)
class ExportResult:
    path: Path
    info_path: Path
    format: str
    quantize: str | None
    size_bytes: int
    input_shape: tuple[int, int, int]
    num_classes: int
    parity: Parity | None  # None: not checked (--no-check)


def default_path(run_dir: str | Path, fmt: str, quantize: str | None = None) -> Path:
    """Where an artifact goes by default: RUN_DIR/export/<name>."""
    suffix = f"_{quantize}" if quantize else ""
    name = {
        "keras": "model.keras",
        "savedmodel": "saved_model",
        "tflite": f"model{suffix}.tflite",
        "onnx": "model.onnx",
    }[fmt]
    return Path(run_dir) / "export" / name


def info_path(path: Path) -> Path:
    """The JSON file next to an artifact."""
    return path.with_name(path.name + ".json")


def check_request(
    run_dir: str | Path, fmt: str, quantize: str | None, out: str | Path | None, force: bool
) -> Path:
    """Validate the request before any work; return the artifact path."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise UserError(f"--quantize {quantize!r}: valid: {', '.join(QUANTIZATIONS)}")
        if fmt != "tflite":
            raise UserError(f"--quantize {quantize}: applies to --format tflite only")
    path = Path(out) if out is not None else default_path(run_dir, fmt, quantize)
    if fmt == "keras" and path.suffix != ".keras":
        raise UserError(f"{path}: a Keras model file needs the suffix .keras")
    for target in (path, info_path(path)):
        if (target.exists() or target.is_symlink()) and not force:
            raise UserError(f"{target}: exists; pass --force to overwrite it")
        if target.is_dir() and not (fmt == "savedmodel" and target == path):
            raise UserError(f"{target}: is a directory; give a file path with --out")
    if path.exists() and fmt == "savedmodel" and not (path / "saved_model.pb").is_file():
        raise UserError(f"{path}: exists and is not a SavedModel; refusing to replace it")
    missing = _missing_runtime(fmt)
    if missing:
        raise UserError(f"--format {fmt} needs the optional package(s) {missing}: {EXTRA}")
    return path


def _missing_runtime(fmt: str) -> str:
    needed = {"onnx": ("tf2onnx", "onnx", "onnxruntime")}.get(fmt, ())
    return ", ".join(m for m in needed if importlib.util.find_spec(m) is None)


def mixed_precision(model: Any) -> bool:
    """Whether any layer computes in float16 or bfloat16 (train.precision: mixed_*)."""
    return any(layer.compute_dtype in ("float16", "bfloat16") for layer in all_layers(model))


def float32_copy(model: Any) -> Any:
    """The same architecture computing in float32, with the same (float32) weights."""
    import keras

    def clone(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _tflite_bytes(wrapper: Any, quantize: str | None, representative: np.ndarray | None) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="dlintro-export-") as tmp:
        wrapper.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            assert representative is not None

            def samples() -> Iterator[list[np.ndarray]]:
                for i in range(len(representative)):
                    yield [representative[i : i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = samples
        return converter.convert()


def _write(wrapper: Any, fmt: str, path: Path, quantize: str | None, rep: Any) -> None:
    """Write the artifact to a temporary name beside `path`, then move it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create the directory: {exc.strerror}") from None
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        with quiet():
            if fmt == "keras":
                wrapper.save(tmp)
            elif fmt == "savedmodel":
                wrapper.export(str(tmp), format="tf_saved_model", verbose=False)
            elif fmt == "tflite":
                tmp.write_bytes(_tflite_bytes(wrapper, quantize, rep))
            else:
                wrapper.export(str(tmp), format="onnx", verbose=False)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def compare(
    reference: np.ndarray, probs: np.ndarray, tolerance: Tolerance, images: str, runtime: str
) -> Parity:
    """Parity of artifact probabilities against the Keras model's."""
    diff = np.abs(np.asarray(probs, np.float64) - np.asarray(reference, np.float64))
    agree = float((probs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    max_diff = float(diff.max()) if diff.size else 0.0
    passed = bool(max_diff <= tolerance.max_abs_diff and agree >= tolerance.min_top1_agreement)
    return Parity(len(reference), images, runtime, max_diff, float(diff.mean()), agree,
                  tolerance, passed)  # fmt: skip


# ----------------------------------------------------------------------------- the command


def export_run(
    run_dir: str | Path,
    fmt: str,
    quantize: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    data_dir: str | Path | None = None,
    num_images: int = PARITY_IMAGES,
    check: bool = True,
) -> ExportResult:
    """Write a run's model as `fmt` with the preprocessing built in, then check its parity
    (unless `check` is False: then `parity` is None). The images come from the run's
    sample.npz, or from the dataset when `data_dir` is given or the run has no sample."""
    from dlintro import runs, tta
    from dlintro.data import normalization
    from dlintro.predict import probabilities

    path = check_request(runs.open_run(run_dir), fmt, quantize, out, force)  # before any work
    spec = runs.run_spec(run_dir)
    cfg = spec.config
    images = check_images(spec, data_dir, check, quantize == "int8", num_images)

    model = runs.load_model(runs.model_path(spec.run_dir))
    reference = probabilities(spec, model, images.test) if check else None
    half = mixed_precision(model)
    if half and fmt == "tflite":  # TFLite has no float16 convolution kernels
        model = float32_copy(model)
    model = tta.wrap(model, cfg.eval.tta)  # the model as evaluated, as is the reference
    if fmt == "keras":  # loads in plain Keras without dlintro where built-in layers can do
        model = builtin_layers(model)  # the test-time views included
    wrapper = wrap(model, spec.input_shape, spec.normalization)
    _write(wrapper, fmt, path, quantize, images.calibration)

    parity = None
    if reference is not None:
        runtime = RUNTIMES.get(fmt) or tflite_interpreter_name()
        probs = run_artifact(fmt, path, images.test)
        # a mixed-precision run's Keras reference computes in half precision itself
        tolerance = TOLERANCES[quantize or ("float16" if half else "float32")]
        parity = compare(reference, probs, tolerance, images.where, runtime)
    size = _size(path)
    record = {
        "artifact": path.name,
        "format": fmt,
        "quantize": quantize,
        "run": str(spec.run_dir),
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [None, *spec.input_shape],
            "layout": "channels last, values 0..255; grey for 1 channel, RGB for 3",
            "resize": "resize other images to this size first (dlintro uses antialiased "
            "bilinear resampling, aspect ratio not kept)",
        },
        "output": {
            "dtype": "float32",
            "shape": [None, len(spec.class_names)],
            "meaning": "class probabilities (softmax), in class_names order",
        },
        "preprocessing": "built in: (x * scale - mean) / std per channel, then the model",
        "normalization": {
            **spec.normalization,
            "scale": normalization.scale(spec.normalization["mode"]),
        },
        "preprocess": preprocess_record(spec.input_shape),
        "class_names": list(spec.class_names),
        "parity": asdict(parity) if parity else None,
    }
    if parity is None:
        record["parity_skipped"] = UNCHECKED
    runs.write_json(info_path(path), record)
    return ExportResult(path, info_path(path), fmt, quantize, size, spec.input_shape,
                        len(spec.class_names), parity)  # fmt: skip


UNCHECKED = "--no-check: the artifact was not compared with the Keras model; use at your own risk"


def preprocess_record(input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The export JSON's "preprocess": what the artifact leaves to the caller, and the code
    (dlintro/preprocess.py, NumPy and Pillow only) that does it as `dlintro predict` does."""
    import inspect

    from dlintro import preprocess

    h, w, c = input_shape
    digits = (
        " For this 1-channel 28x28 input, a photo of a dark digit on light paper (mean "
        "brightness > 0.5) gets the MNIST way instead, as dlintro predict --invert auto does: "
        "transparency over white, grey, inverted, paper level (median) removed, cropped to the "
        "ink, longer side scaled to 20 px, centred by centre of mass in the 28x28 frame."
        if (h, w, c) == (28, 28, 1)
        else ""
    )
    mode = {1: "grey", 3: "RGB", 4: "RGBA"}.get(c, f"{c} channels")
    return {
        "left_to_caller": f"Decode the image file, convert it to {mode}, resize it to {h}x{w} "
        "with antialiased bilinear resampling (aspect ratio not kept), and stack the images "
        f"into uint8 [batch, {h}, {w}, {c}]; do not divide by 255 or normalize (built in).{digits}",
        "usage": f"x = np.stack([preprocess(p, {h}, {w}, {c}) for p in paths])",
        "requires": ["numpy", "pillow"],
        "code": inspect.getsource(preprocess),
    }


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "TOLERANCES",
    "ExportResult",
    "Parity",
    "Tolerance",
    "check_request",
    "compare",
    "default_path",
    "export_run",
    "info_path",
    "wrap",
]
