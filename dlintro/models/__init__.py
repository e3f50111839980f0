"""Model registry: every family module below registers its builders on import.

A builder is `fn(input_shape, num_classes, **params) -> keras.Model`: functional Keras, no
knowledge of data, optimizers or strategies, arguments checked (strictly typed, ranges enforced).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlintro.errors import UserError
from dlintro.registry import Registry

if TYPE_CHECKING:
    import keras

MODELS: Registry[Any] = Registry("model")

# Arguments dlintro supplies from the dataset; never set in a config's `model.params`.
SUPPLIED = ("input_shape", "num_classes")

from dlintro.models import (  # noqa: E402, F401  (registers the families)
    alexnet,
    allcnn,
    convnets,
    inception,
    lenet,
    mlp,
    nin,
    resnet,
    vgg,
)


def build(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    params: dict[str, Any] | None = None,
) -> keras.Model:
    """Build registered model `name` for the given input shape and number of classes."""
    import keras

    builder = MODELS.get(name)
    try:
        model = builder(tuple(input_shape), int(num_classes), **(params or {}))
    except ValueError as exc:  # argument checks, including pydantic's ValidationError
        raise UserError(f"model '{name}': {_one_line(exc)}") from None
    if model.name != name:  # a named variant of a family builder: name it after the variant
        model = keras.Model(model.input, model.output, name=name)
    return model


def main_output(model: keras.Model) -> keras.Model:
    """The model as used after training: its first output only. Models with training-time
    auxiliary classifiers (GoogLeNet's aux heads) return [main, aux...]; the view shares their
    weights, so evaluation, the saved model.keras, predict and export see one softmax."""
    import keras

    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=model.name)


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc} = {first.get('input')!r}: {first['msg']}"
    return " ".join(str(exc).split())
