"""What a run directory keeps for use outside dlintro, written at the end of training.

- `inference.keras`: the trained model with the run's normalization built in, for plain Keras
  (`keras.saving.load_model`, no dlintro import): it takes images of the run's input shape as
  they come, uint8 or float on 0..255 [batch, H, W, C] (float32 input, so uint8 converts
  exactly and float images are not truncated), and returns class probabilities float32.
  It computes what `dlintro eval` and `dlintro predict` report: with `eval.tta` set it
  includes the test-time views (dlintro.tta.wrap: for flip_translate 6 forward passes per
  image, the accuracy that eval reported), without it the plain model.
  `model.keras` stays the training model (normalized inputs) that eval and export read.
- `sample.npz`: up to PARITY_IMAGES test images (uint8, with their labels) and up to
  REPRESENTATIVE_IMAGES training images, so that `dlintro export` can check parity and
  calibrate int8 on a machine that has the run directory but not the dataset. Written with
  numpy's savez (arrays only, no pickle) and read with allow_pickle=False; both are capped at
  SAMPLE_BYTES each, so runs on large images keep fewer.

`wrap` builds the preprocessing-in-front model for these and for every export artifact (one
owner). Plain Keras knows only its own layers: inference.keras goes through
dlintro.builtin.builtin_layers, which replaces dlintro's layers by built-in ones that compute
exactly the same: ShortcutPadding (CIFAR ResNets, option A), PatchWhitening (cifar_speednet:
a Conv2D), and the test-time views TTAView (slices and concatenations: a fixed permutation of
rows and columns) and TTAMean (Rescaling and Add). So a cifar_speednet run with eval.tta loads
in plain Keras. LocalResponseNormalization (alexnet, googlenet) has no built-in equivalent, so
those models load after `import dlintro.models`. Keras and TensorFlow are imported inside the
functions.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlintro.builtin import all_layers, builtin_layers
from dlintro.errors import UserError

INFERENCE = "inference.keras"
SAMPLE = "sample.npz"
INPUT_NAME = "image"  # the input of every artifact and of inference.keras
PARITY_IMAGES = 300  # test images for export's parity check
REPRESENTATIVE_IMAGES = 200  # training images for int8 calibration
SAMPLE_BYTES = 8 << 20  # per part of sample.npz: 300 MNIST images are 235 KB, CIFAR 0.9 MB


@dataclass(frozen=True)
class Sample:
    """The images a run keeps (uint8 [N, H, W, C]) and the test images' labels."""

    test_images: np.ndarray
    test_labels: np.ndarray
    calibration_images: np.ndarray


# ----------------------------------------------------------------------------- the models


def wrap(
    model: Any,
    input_shape: tuple[int, int, int],
    normalization: dict[str, Any],
    dtype: str = "uint8",
) -> Any:
    """A Keras model: images [batch, *input_shape] on 0..255 (`dtype`) -> normalized -> `model`.

    Two Rescaling layers compute `(x * scale - mean) * (1 / std)` in float32, the very
    operations of the training pipeline, so the wrapper is exact on the same images. The output
    is float32 also for a mixed-precision model.
    """
    import keras

    from dlintro.data import normalization as norm

    scale, mean, std = norm.check(normalization, input_shape[-1])
    inputs = keras.Input(input_shape, dtype=dtype, name=INPUT_NAME)
    x = keras.layers.Rescaling(scale, offset=[-m for m in mean], dtype="float32",
                               name="scale_and_center")(inputs)  # fmt: skip
    x = keras.layers.Rescaling([1.0 / s for s in std], offset=0.0, dtype="float32",
                               name="divide_by_std")(x)  # fmt: skip
    outputs = model(x)
    if outputs.dtype != "float32":
        outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities")(outputs)
    wrapper = keras.Model(inputs, outputs, name=f"{model.name}_{dtype}")
    wrapper(np.zeros((1, *input_shape), dtype))  # built and called: exporters need that
    return wrapper


def inference_model(
    model: Any,
    input_shape: tuple[int, int, int],
    normalization: dict[str, Any],
    tta: str = "none",
) -> Any:
    """inference.keras's model: float32 images on 0..255 (uint8 converts exactly) -> the run's
    normalization -> `model` as evaluated (its `tta` views: dlintro.tta.wrap), with built-in
    layers only where possible -> probabilities."""
    from dlintro import tta as views

    model = builtin_layers(views.wrap(model, tta))
    return wrap(model, input_shape, normalization, dtype="float32")


def save_keras(model: Any, path: Path) -> None:
    """Save atomically: Keras writes a temporary file that is then renamed into place."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the sample


def pick_sample(x_test: Any, y_test: Any, x_train: Any, seed: int) -> Sample:
    """The first PARITY_IMAGES test images and REPRESENTATIVE_IMAGES seeded training images (as
    export has always chosen them), fewer when they would exceed SAMPLE_BYTES."""
    per_image = max(1, int(np.prod(x_test.shape[1:])))
    cap = max(1, SAMPLE_BYTES // per_image)
    n_test = min(PARITY_IMAGES, cap, len(x_test))
    n_cal = min(REPRESENTATIVE_IMAGES, cap, len(x_train))
    return Sample(
        np.ascontiguousarray(x_test[:n_test], np.uint8),
        np.asarray(y_test[:n_test], np.int64),
        np.ascontiguousarray(x_train[calibration_choice(len(x_train), n_cal, seed)], np.uint8),
    )


def calibration_choice(n: int, count: int, seed: int) -> np.ndarray:
    """Which `count` of `n` training images calibrate int8: seeded, sorted, without repeats."""
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def save_sample(path: Path, sample: Sample) -> None:
    """Write sample.npz atomically (arrays only: numpy's savez, compressed)."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    try:
        np.savez_compressed(tmp, test_images=sample.test_images, test_labels=sample.test_labels,
                            calibration_images=sample.calibration_images)  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_sample(run_dir: str | Path, input_shape: tuple[int, int, int]) -> Sample | None:
    """A run's sample.npz checked against its input shape; None when the run has none (runs
    from before dlintro kept one). A damaged file is a UserError naming it."""
    path = Path(run_dir) / SAMPLE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            sample = Sample(f["test_images"], f["test_labels"], f["calibration_images"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        why = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise UserError(f"{path}: unreadable ({why}); delete it to check on the dataset") from None
    shape = tuple(input_shape)
    for name, x in (("test_images", sample.test_images),
                    ("calibration_images", sample.calibration_images)):  # fmt: skip
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise UserError(
                f"{path}: {name} are {x.dtype} {list(x.shape)}, expected uint8 [N, "
                f"{', '.join(map(str, shape))}]; delete it to check on the dataset"
            )
    if sample.test_labels.shape != (len(sample.test_images),):
        raise UserError(f"{path}: test_labels do not match test_images; delete it")
    return sample


@dataclass(frozen=True)
class CheckImages:
    """uint8 images for export's parity check (`test`) and int8 calibration, and where from."""

    test: np.ndarray | None
    calibration: np.ndarray | None
    where: str


def check_images(
    spec: Any, data_dir: str | Path | None, test: bool, calibration: bool, num_images: int
) -> CheckImages:
    """Export's images for the run `spec` (runs.RunSpec): its sample.npz unless `data_dir`
    asks for the dataset, the dataset when the run has no sample, and a one-line UserError
    saying why and what to do when neither is there."""
    from dlintro.data import data_root, load_dataset

    name = spec.config.data.dataset
    if not test and not calibration:
        return CheckImages(None, None, "")
    sample = load_sample(spec.run_dir, spec.input_shape) if data_dir is None else None
    if sample is not None:
        x_test, x_train = sample.test_images, sample.calibration_images
        where = f"{name} test images saved with the run"
    else:
        try:
            _, arrays = load_dataset(name, data_root(data_dir), spec.config.data.params)
        except UserError as exc:
            need = "test images for the parity check" if test else "training images for int8"
            skip = ", or --no-check to export without the check" if test else ""
            raise UserError(
                f"{spec.run_dir}: no {need}: the run has no {SAMPLE} (older runs do not) and "
                f"the dataset is not there ({exc}); give --data-dir{skip}"
            ) from None
        if tuple(arrays.x_test.shape[1:]) != spec.input_shape:
            raise UserError(
                f"{spec.run_dir}: the {name} images are {arrays.x_test.shape[1:]} but "
                f"the run was trained on {spec.input_shape}"
            )
        x_test, where = arrays.x_test, f"{name} test images"
        count = min(REPRESENTATIVE_IMAGES, len(arrays.x_train))
        x_train = arrays.x_train[calibration_choice(len(arrays.x_train), count, spec.config.seed)]
    x_test = np.ascontiguousarray(x_test[:num_images]) if test else None
    if x_test is not None and not len(x_test):
        raise UserError(f"{name}: no test images for the parity check")
    if calibration and not len(x_train):
        raise UserError(f"{name}: no training images to calibrate int8 with")
    return CheckImages(x_test, x_train if calibration else None, where)


# ----------------------------------------------------------------------------- end of training


def save_run_artifacts(
    run_dir: Path, model: Any, bundle: Any, cfg: Any, data_dir: str | Path | None = None
) -> None:
    """Beside model.keras: inference.keras (the input shape and normalization of the DataBundle
    `bundle`), and sample.npz from the dataset of the Config `cfg` (already parsed in this
    process: the dataset loaders cache their arrays)."""
    from dlintro.data import data_root, load_dataset

    shape, norm = tuple(bundle.info.input_shape), bundle.normalization
    save_keras(inference_model(model, shape, norm, cfg.eval.tta), run_dir / INFERENCE)
    _, arrays = load_dataset(cfg.data.dataset, data_root(data_dir), cfg.data.params)
    sample = pick_sample(arrays.x_test, arrays.y_test, arrays.x_train, cfg.seed)
    save_sample(run_dir / SAMPLE, sample)


__all__ = [
    "INFERENCE",
    "INPUT_NAME",
    "PARITY_IMAGES",
    "REPRESENTATIVE_IMAGES",
    "SAMPLE",
    "CheckImages",
    "Sample",
    "all_layers",
    "builtin_layers",
    "calibration_choice",
    "check_images",
    "inference_model",
    "load_sample",
    "pick_sample",
    "save_keras",
    "save_run_artifacts",
    "save_sample",
    "wrap",
]
