"""Predict: classify image files with a trained run, preprocessed exactly as in training.

Each PNG/JPEG (any size, grey or colour) is decoded like an `image_folder` training image
(dlintro.data.folders): converted to the run's channels, resized to its input size with
antialiased bilinear resampling when the size differs, kept as uint8; then the batch goes
through the test pipeline with the run's saved normalization, and the run's final model gives
class probabilities. Directories expand to their image files (sorted, recursive, hidden files
left out). An unreadable file is reported and the others still get their predictions; only
regular files are read (a FIFO or device is reported, never opened) and an image's pixels,
read from its header, must be within the IMAGE_PIXELS limit (dlintro.limits) before decoding.

The MNIST way for digit photos (`invert`): MNIST digits are light ink on black, cropped to the
ink, scaled so that the longer side is 20 px, and centred by centre of mass in a 28x28 frame. A
photo of a dark digit on paper is made to look like that: grey, inverted, paper level removed,
cropped to the ink, scaled to a 20 px box (aspect kept), centred by mass in the frame. `auto`
applies it to 1-channel 28x28 runs, and only to images that are mostly light (mean > 0.5);
`yes` applies it to every image (any run; the box is 20/28 of the input size); `no` never.
TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlintro import limits
from dlintro.data.folders import IMAGE_SUFFIXES
from dlintro.errors import UserError
from dlintro.runs import RunSpec

INVERT_MODES = ("auto", "yes", "no")
BOX_FRACTION = 20 / 28  # MNIST: the digit's longer side is 20 px in a 28 px frame
INK_FLOOR = 0.2  # after stretching, weaker "ink" (paper texture, shadows) counts as background
BLANK = 0.1  # an image whose ink contrast is below this has no digit: an all-black frame


@dataclass
class Prepared:
    """Decoded images of some files: uint8 [N,H,W,C] for the files that decoded."""

    files: list[str]
    images: np.ndarray
    mnist_way: list[bool]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


@dataclass
class PredictResult:
    """Predictions (`{"file", "top": [{"class", "name", "probability"}]}`) and failures."""

    predictions: list[dict[str, Any]]
    failed: list[tuple[str, str]]
    mnist_way: list[bool]  # per prediction: was the MNIST way applied


def expand(inputs: list[str | Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to predict from files and directories (sorted, recursive) and the paths that fail,
    both in the order of `inputs`."""
    files: list[str] = []
    failed: list[tuple[str, str]] = []
    for item in inputs:
        path = str(item)
        if os.path.isdir(path):
            found = _images_under(path, failed)
            if not found:
                failed.append((path, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            files += found
        elif os.path.isfile(path):
            files.append(path)
        elif os.path.lexists(path):
            failed.append((path, "not a regular file"))
        else:
            failed.append((path, "no such file or directory"))
    return list(dict.fromkeys(files)), failed


def _in_input_order(inputs: list[str | Path], failed: list[tuple[str, str]]) -> list:
    """Failures sorted by the command-line argument they came from (stable within one)."""
    args = [str(a) for a in inputs]

    def key(item: tuple[str, str]) -> int:
        path = item[0]
        for i, arg in enumerate(args):
            if path == arg or path.startswith(arg.rstrip(os.sep) + os.sep):
                return i
        return len(args)

    return sorted(failed, key=key)


def _images_under(folder: str, failed: list[tuple[str, str]]) -> list[str]:
    found = []

    def onerror(exc: OSError) -> None:
        failed.append((exc.filename or folder, f"cannot list ({exc.strerror or exc})"))

    for top, dirs, names in os.walk(folder, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if d[:1] != ".")
        for name in sorted(names):
            if name[:1] != "." and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                path = os.path.join(top, name)
                try:  # only regular files: a FIFO named like an image would block forever
                    problem = limits.not_regular(path)
                except OSError as exc:
                    problem = f"cannot read ({exc.strerror or exc})"
                if problem:
                    failed.append((path, problem))
                else:
                    found.append(path)
    return found


def _check_invert(invert: str) -> None:
    if invert not in INVERT_MODES:
        raise UserError(f"--invert {invert!r}: valid: {', '.join(INVERT_MODES)}")


def mnist_applies(input_shape: tuple[int, int, int], invert: str) -> bool:
    """Whether `invert` may apply the MNIST way to a run of this input shape."""
    _check_invert(invert)
    return invert == "yes" or (invert == "auto" and tuple(input_shape) == (28, 28, 1))


def mnist_way(
    grey: np.ndarray, size: tuple[int, int] = (28, 28), invert: bool = True
) -> np.ndarray:
    """A digit image [h, w] (uint8 or float 0..255) made MNIST-like: uint8 [size].

    Inverted (dark ink on light paper becomes light on black) unless `invert` is False, the
    paper level (the median) removed and the ink stretched to 0..1, cropped to the bounding box
    of the ink, scaled so that its longer side is 20/28 of the frame (aspect kept, antialiased),
    and placed so that its centre of mass is at the centre of the frame.
    """
    import tensorflow as tf

    g = np.asarray(grey, np.float64).reshape(grey.shape[0], grey.shape[1]) / 255.0
    if invert:
        g = 1.0 - g
    ink = g - np.median(g)
    peak = float(ink.max())
    frame = np.zeros(size, np.float64)
    if peak < BLANK:
        return frame.astype(np.uint8)
    ink = np.clip((ink / peak - INK_FLOOR) / (1.0 - INK_FLOOR), 0.0, 1.0)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = max(1, round(min(size) * BOX_FRACTION))
    longer = max(crop.shape)
    new = (max(1, round(crop.shape[0] * box / longer)), max(1, round(crop.shape[1] * box / longer)))
    scaled = tf.image.resize(crop[..., None].astype(np.float32), new, "bilinear", antialias=True)
    scaled = np.clip(scaled.numpy()[..., 0].astype(np.float64), 0.0, 1.0)
    mass = scaled.sum()
    if mass <= 0:
        return frame.astype(np.uint8)
    scaled /= scaled.max()  # resampling dims thin strokes; MNIST's strokes reach 255
    mass = scaled.sum()
    ys, xs = np.indices(scaled.shape)
    cy, cx = float((ys * scaled).sum() / mass), float((xs * scaled).sum() / mass)
    top, left = round(size[0] / 2 - 0.5 - cy), round(size[1] / 2 - 0.5 - cx)
    # paste with clipping: the box may reach past the frame after centring by mass
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + new[0], size[0]), min(left + new[1], size[1])
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = scaled[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.round(frame * 255.0).astype(np.uint8)


def _problem(exc: Exception | str) -> str:
    """A decoding error in one line, without TensorFlow's {{function_node ...}} and [Op:] parts."""
    text = exc if isinstance(exc, str) else (getattr(exc, "message", "") or str(exc))
    text = re.sub(r"\{\{[^}]*\}\}", "", text.split("[Op:")[0])
    return " ".join(text.split()) or (exc if isinstance(exc, str) else type(exc).__name__)


def _decode_grey(path: str) -> np.ndarray:
    """A file decoded at its own size as grey 0..255 float [h, w]; transparency over white."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    if bool(tf.io.is_jpeg(raw)):
        image = tf.io.decode_jpeg(raw, channels=0, dct_method="INTEGER_ACCURATE")
    else:
        image = tf.io.decode_image(raw, channels=0, expand_animations=False)
    x = image.numpy().astype(np.float64)  # decode_* give uint8, 16-bit PNGs included
    channels = x.shape[-1]
    if channels in (2, 4):  # grey+alpha, RGBA: composite over white paper
        alpha = x[..., -1:] / 255.0
        x = x[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    if x.shape[-1] == 3:
        return x @ np.array([0.2989, 0.5870, 0.1140])  # tf.image.rgb_to_grayscale's weights
    return x[..., 0]


def prepare(files: list[str], input_shape: tuple[int, int, int], invert: str = "auto") -> Prepared:
    """Decode files into the run's input shape (uint8), the MNIST way where `invert` says.

    Every file is screened (a regular file within the pixel limit) before TensorFlow starts,
    so inputs that are all refused cost neither its start-up nor its memory."""
    from dlintro.data.imagefile import decode_images, decode_problem, screen

    h, w, c = input_shape
    if c not in (1, 3, 4):
        raise UserError(f"the run's images have {c} channels; predict supports 1, 3 or 4")
    failed = [(path, problem) for path in files if (problem := screen(path))]
    refused = {path for path, _ in failed}
    screened = [p for p in files if p not in refused]
    if not screened:
        return Prepared([], np.zeros((0, h, w, c), np.uint8), [], failed)
    import tensorflow as tf

    special: dict[str, np.ndarray] = {}
    if mnist_applies(input_shape, invert):
        for path in screened:
            try:
                grey = _decode_grey(path)
            except (tf.errors.OpError, ValueError) as exc:
                failed.append((path, _problem(exc)))
                continue
            if invert == "yes" or grey.mean() / 255.0 > 0.5:
                frame = mnist_way(grey, (h, w), invert=True)[..., None]
                special[path] = np.repeat(frame, c, axis=-1) if c > 1 else frame
    bad = {p for p, _ in failed}
    plain = [p for p in files if p not in special and p not in bad]
    decoded: dict[str, np.ndarray] = {}
    if plain:
        images, ok = decode_images(tuple(plain), (h, w), c)
        for i, path in enumerate(plain):
            if ok[i]:
                decoded[path] = images[i]
            else:
                failed.append((path, _problem(decode_problem(path, (h, w), c) or "cannot decode")))
    kept = [p for p in files if p in special or p in decoded]
    order = {p: i for i, p in enumerate(files)}
    failed.sort(key=lambda item: order.get(item[0], 0))
    images = np.zeros((len(kept), h, w, c), np.uint8)
    for i, path in enumerate(kept):
        images[i] = special[path] if path in special else decoded[path]
    return Prepared(kept, images, [p in special for p in kept], failed)


def probabilities(spec: RunSpec, model: Any, images: np.ndarray) -> np.ndarray:
    """Class probabilities float64 [N, classes] of uint8 images through the run's pipeline."""
    from dlintro import evaluate
    from dlintro.data.pipeline import make_dataset

    labels = np.zeros(len(images), np.int32)
    dataset = make_dataset(images, labels, spec.batch_size, spec.normalization)
    return evaluate.predict(model, dataset, tta=spec.config.eval.tta)[0]  # as eval does


def top_k(probs: np.ndarray, class_names: tuple[str, ...], k: int) -> list[list[dict[str, Any]]]:
    """Per row, the k most probable classes (ties broken by the lower index)."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [
            {
                "class": int(j),
                "name": class_names[j] if j < len(class_names) else str(j),
                "probability": float(row[j]),
            }
            for j in idx
        ]
        for row, idx in zip(probs, order, strict=True)
    ]


def predict_files(
    run_dir: str | Path,
    inputs: list[str | Path],
    k: int = 3,
    invert: str = "auto",
    csv_path: str | Path | None = None,
) -> PredictResult:
    """Predict the top-k classes of image files and directories with a run's final model;
    with `csv_path`, also write them there (write_csv)."""
    from dlintro import runs

    runs.open_run(run_dir)  # the cheap checks first: the run, then the options
    if k < 1:
        raise UserError(f"--top-k {k}: must be at least 1")
    _check_invert(invert)
    if csv_path is not None:
        check_csv_target(csv_path)
    spec = runs.run_spec(run_dir)
    files, failed = expand(inputs)
    prepared = prepare(files, spec.input_shape, invert)
    failed = _in_input_order(inputs, failed + prepared.failed)
    if not prepared.files:
        what = f"{failed[0][0]}: {failed[0][1]}" if failed else "no input"
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise UserError(f"nothing to predict: {what}{more}")
    model = runs.load_model(runs.model_path(spec.run_dir))
    probs = probabilities(spec, model, prepared.images)
    tops = top_k(probs, spec.class_names, k)
    predictions = [{"file": f, "top": t} for f, t in zip(prepared.files, tops, strict=True)]
    if csv_path is not None:
        write_csv(csv_path, predictions)
    return PredictResult(predictions, failed, prepared.mnist_way)


# ----------------------------------------------------------------------------- CSV output


def csv_columns(k: int) -> list[str]:
    """The CSV header: the predicted class first, then the other top-k classes."""
    more = [f"top{i}_{c}" for i in range(2, k + 1) for c in ("class", "name", "probability")]
    return ["file", "class", "name", "confidence", *more]


def check_csv_target(path: str | Path) -> None:
    """Refuse, before any work, a --csv path that cannot be written (an existing file is
    replaced, as a shell redirection would)."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--csv {target}: is a directory; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise UserError(f"--csv {target}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--csv {target}: the directory {parent} is not writable")


def write_csv(path: str | Path, predictions: list[dict[str, Any]]) -> None:
    """Predictions as CSV (one row per image, columns csv_columns(k); probabilities %.6g),
    written atomically."""
    import csv
    import io

    from dlintro import runs

    k = max((len(p["top"]) for p in predictions), default=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(k))
    for p in predictions:
        first, *rest = p["top"]
        row = [p["file"], first["class"], first["name"], f"{first['probability']:.6g}"]
        for t in rest:
            row += [t["class"], t["name"], f"{t['probability']:.6g}"]
        writer.writerow(row)
    try:
        runs.write_text(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"--csv {path}: cannot write: {exc.strerror or exc}") from None


__all__ = [
    "INVERT_MODES",
    "PredictResult",
    "Prepared",
    "check_csv_target",
    "csv_columns",
    "expand",
    "mnist_applies",
    "mnist_way",
    "predict_files",
    "prepare",
    "probabilities",
    "top_k",
    "write_csv",
]
