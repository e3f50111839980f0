"""Export a trained run for use elsewhere (Keras, SavedModel, TFLite, ONNX), with a parity check.

Every artifact has the preprocessing built in: a wrapper model takes uint8 images [batch, H, W, C]
of the run's input shape (0..255, channels last) and applies the run's saved normalization,
`(x * scale - mean) / std`, with the same float32 operations as the training pipeline, then the
trained model; the output is the class probabilities float32 [batch, classes]. Resizing and
channel conversion stay outside (as `dlintro predict` does them). A JSON file next to the
artifact (`<artifact>.json`) records the input, output, class names, normalization and the
parity result.

After writing, the artifact is loaded with its own runtime (keras, tf.saved_model, the LiteRT
interpreter, onnxruntime) and compared with the run's Keras model fed by the run's test pipeline,
on up to PARITY_IMAGES test images: the largest absolute difference of any probability, and the
share of images whose top-1 class agrees. TOLERANCES says what passes:

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

from dlintro.errors import UserError
from dlintro.runtimes import INPUT_NAME, RUNTIMES, quiet, run_artifact, tflite_interpreter_name

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
PARITY_IMAGES = 300
REPRESENTATIVE_IMAGES = 200
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
    parity: Parity


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


def wrap(model: Any, input_shape: tuple[int, int, int], normalization: dict[str, Any]) -> Any:
    """A Keras model: uint8 images [batch, *input_shape] -> normalized -> `model`.

    Two Rescaling layers compute `(x * scale - mean) * (1 / std)` in float32, the very
    operations of the training pipeline, so the wrapper is exact on the same images.
    """
    import keras

    from dlintro.data import normalization as norm

    scale, mean, std = norm.check(normalization, input_shape[-1])
    inputs = keras.Input(input_shape, dtype="uint8", name=INPUT_NAME)
    x = keras.layers.Rescaling(scale, offset=[-m for m in mean], dtype="float32",
                               name="scale_and_center")(inputs)  # fmt: skip
    x = keras.layers.Rescaling([1.0 / s for s in std], offset=0.0, dtype="float32",
                               name="divide_by_std")(x)  # fmt: skip
    outputs = model(x)
    if outputs.dtype != "float32":
        outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities")(outputs)
    wrapper = keras.Model(inputs, outputs, name=f"{model.name}_uint8")
    wrapper(np.zeros((1, *input_shape), np.uint8))  # built and called: exporters need that
    return wrapper


def mixed_precision(model: Any) -> bool:
    """Whether any layer computes in float16 or bfloat16 (train.precision: mixed_*)."""

    def layers(m: Any) -> Iterator[Any]:
        for layer in getattr(m, "layers", []):
            yield layer
            yield from layers(layer)

    return any(layer.compute_dtype in ("float16", "bfloat16") for layer in layers(model))


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
) -> ExportResult:
    """Write a run's model as `fmt` with the preprocessing built in, then check its parity."""
    from dlintro import runs
    from dlintro.data import data_root, load_dataset, normalization
    from dlintro.predict import probabilities

    path = check_request(runs.open_run(run_dir), fmt, quantize, out, force)  # before any work
    spec = runs.run_spec(run_dir)
    cfg = spec.config
    _, arrays = load_dataset(cfg.data.dataset, data_root(data_dir), cfg.data.params)
    if tuple(arrays.x_test.shape[1:]) != spec.input_shape:
        raise UserError(
            f"{spec.run_dir}: the {cfg.data.dataset} images are {arrays.x_test.shape[1:]} but "
            f"the run was trained on {spec.input_shape}"
        )
    x_test = np.ascontiguousarray(arrays.x_test[:num_images])
    if not len(x_test):
        raise UserError(f"{cfg.data.dataset}: no test images for the parity check")
    representative = None
    if quantize == "int8":
        rng = np.random.default_rng(cfg.seed)
        n = min(REPRESENTATIVE_IMAGES, len(arrays.x_train))
        representative = arrays.x_train[np.sort(rng.choice(len(arrays.x_train), n, False))]

    model = runs.load_model(runs.model_path(spec.run_dir))
    reference = probabilities(spec, model, x_test)
    half = mixed_precision(model)
    if half and fmt == "tflite":  # TFLite has no float16 convolution kernels
        model = float32_copy(model)
    wrapper = wrap(model, spec.input_shape, spec.normalization)
    _write(wrapper, fmt, path, quantize, representative)

    runtime = RUNTIMES.get(fmt) or tflite_interpreter_name()
    probs = run_artifact(fmt, path, x_test)
    # a mixed-precision run's Keras reference computes in half precision itself
    tolerance = TOLERANCES[quantize or ("float16" if half else "float32")]
    where = f"{cfg.data.dataset} test images"
    parity = compare(reference, probs, tolerance, where, runtime)
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
        "class_names": list(spec.class_names),
        "parity": asdict(parity),
    }
    runs.write_json(info_path(path), record)
    return ExportResult(path, info_path(path), fmt, quantize, size, spec.input_shape,
                        len(spec.class_names), parity)  # fmt: skip


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
