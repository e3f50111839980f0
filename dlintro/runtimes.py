"""Run an exported artifact with its own runtime (Keras, tf.saved_model, the LiteRT
interpreter, onnxruntime) on uint8 images: export's parity check, and anyone checking an
artifact the way a deployment would load it. The runtimes are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlintro.artifacts import INPUT_NAME  # the input of every artifact: uint8 [batch, H, W, C]
from dlintro.quiet import native_stderr_off


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the converters' and runtimes' chatter: Python warnings, INFO logs (tf2onnx,
    absl), and what their C++ code prints on file descriptor 2 (the TFLite quantizer's settings,
    "Created TensorFlow Lite XNNPACK delegate"). Errors still arrive as exceptions;
    DLINTRO_DEBUG=1 keeps file descriptor 2 open."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), native_stderr_off():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _run_keras(path: Path, x: np.ndarray) -> np.ndarray:
    from dlintro.runs import load_model

    model = load_model(path)
    return np.asarray(model.predict_on_batch(x))


def _run_savedmodel(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    outputs = serve(**{INPUT_NAME: tf.constant(x)})
    return next(iter(outputs.values())).numpy()


def tflite_interpreter(**kwargs: Any) -> tuple[Any, str]:
    """The LiteRT interpreter (ai_edge_litert), else TensorFlow's deprecated tf.lite one."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(**kwargs), "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(**kwargs), "tf.lite.Interpreter"


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a .tflite model on a uint8 batch."""
    interpreter, _ = tflite_interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    y = interpreter.get_tensor(out["index"])
    scale, zero = out.get("quantization", (0.0, 0))
    if np.issubdtype(y.dtype, np.integer) and scale:
        y = (y.astype(np.float32) - zero) * scale
    return np.asarray(y, np.float32)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Run an .onnx model on a uint8 batch with onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0])


RUNTIMES = {"keras": "keras", "savedmodel": "tf.saved_model", "onnx": "onnxruntime"}


def run_artifact(fmt: str, path: Path, x: np.ndarray, batch: int = 100) -> np.ndarray:
    """Probabilities of an exported artifact on uint8 images, with its own runtime."""
    fn = {"keras": _run_keras, "savedmodel": _run_savedmodel, "tflite": run_tflite,
          "onnx": run_onnx}[fmt]  # fmt: skip
    with quiet():
        return np.concatenate([fn(path, x[i : i + batch]) for i in range(0, len(x), batch)])


def tflite_interpreter_name() -> str:
    return "ai_edge_litert" if importlib.util.find_spec("ai_edge_litert") else "tf.lite"
