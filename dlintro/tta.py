"""Test-time augmentation (`eval.tta`): the model's probabilities averaged over views of each
image, as airbench94 evaluates (its tta_level 1 and 2).

    none            the image
    flip            1/2 the image + 1/2 its mirror image
    flip_translate  1/2 flip(image) + 1/4 flip(image moved 1 pixel down-right) + 1/4 flip(image
                    moved 1 pixel up-left), the moves filled by reflection (no edge repeat)

`wrap(model, mode)` is a Keras model with the same input and output as `model` that computes
this: `model` runs on each view (shared weights, inference mode) and the probabilities are
summed with the weights above. It is the one definition that evaluation (training's test
metrics, `dlintro eval` and its report: dlintro.evaluate.predict), `dlintro predict` and
`dlintro export` (its artifact and its parity reference) all use. The layers are
serializable and export to SavedModel, TFLite and ONNX (reverse, reflection pad, slice, add);
for plain Keras (inference.keras, the keras export) dlintro.builtin copies them as built-in
layers that compute exactly the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import layers, ops

MODES = ("none", "flip", "flip_translate")


@dataclass(frozen=True)
class View:
    """One view: its weight, a left-right mirror or not, and a move by (dy, dx) pixels."""

    weight: float
    flip: bool = False
    dy: int = 0
    dx: int = 0


def views(mode: str) -> tuple[View, ...]:
    """The weighted views of a mode (weights sum to 1)."""
    if mode not in MODES:
        raise ValueError(f"unknown eval.tta '{mode}' (known: {', '.join(MODES)})")
    if mode == "none":
        return (View(1.0),)
    pairs = [(0.5, 0, 0)] if mode == "flip" else [(0.25, 0, 0), (0.125, 1, 1), (0.125, -1, -1)]
    return tuple(View(w, f, dy, dx) for w, dy, dx in pairs for f in (False, True))


@keras.saving.register_keras_serializable(package="dlintro")
class TTAView(layers.Layer):
    """images [B, H, W, C] -> one view of them: moved by (dy, dx) with reflection, mirrored."""

    def __init__(self, flip: bool = False, dy: int = 0, dx: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.flip, self.dy, self.dx = bool(flip), int(dy), int(dx)

    def call(self, images: Any) -> Any:
        x, (dy, dx) = images, (self.dy, self.dx)
        if dy or dx:
            p = max(abs(dy), abs(dx))
            h, w = images.shape[1], images.shape[2]
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], "reflect")
            x = x[:, p - dy : p - dy + h, p - dx : p - dx + w, :]
        return ops.flip(x, axis=2) if self.flip else x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"flip": self.flip, "dy": self.dy, "dx": self.dx}


@keras.saving.register_keras_serializable(package="dlintro")
class TTAMean(layers.Layer):
    """The views' probabilities [B, classes] each -> their weighted sum [B, classes]."""

    def __init__(self, weights: list[float], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.view_weights = [float(w) for w in weights]

    def call(self, probs: Any) -> Any:
        terms = [w * ops.cast(p, "float32") for w, p in zip(self.view_weights, probs, strict=True)]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"weights": self.view_weights}


def wrap_views(model: keras.Model, chosen: tuple[View, ...], name: str) -> keras.Model:
    """`model` evaluated on the weighted views `chosen` (see the module doc): one call of
    `model` per view (shared weights), so memory stays that of one batch."""
    inputs = keras.Input(model.input_shape[1:], name="images")
    probs = [
        model(TTAView(v.flip, v.dy, v.dx, name=f"tta_view{i}")(inputs))
        for i, v in enumerate(chosen)
    ]
    outputs = TTAMean([v.weight for v in chosen], name="tta_mean")(probs)
    return keras.Model(inputs, outputs, name=name)


def wrap(model: keras.Model, mode: str) -> keras.Model:
    """The model as `eval.tta` `mode` evaluates it; `model` itself for "none"."""
    if mode == "none":
        views(mode)
        return model
    return wrap_views(model, views(mode), f"{model.name}_tta_{mode}")
