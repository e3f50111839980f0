"""The model registry, and `build` / `main_output`; it imports no model family.

A builder is `fn(input_shape, num_classes, **params) -> keras.Model`: functional Keras, no
knowledge of data, optimizers or strategies, arguments checked (strictly typed, ranges enforced).
The families (dlintro/models/*.py) register into MODELS; `dlintro.models` imports them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlintro.registry import Registry

if TYPE_CHECKING:
    import keras

# Arguments dlintro supplies from the dataset; never set in a config's `model.params`.
SUPPLIED = ("input_shape", "num_classes")

MODELS: Registry[Any] = Registry("model", supplied=SUPPLIED)


def build(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    params: dict[str, Any] | None = None,
) -> keras.Model:
    """Build registered model `name` for the given input shape and number of classes.

    Bad params or arguments are a ParamsError (see Registry.create).
    """
    import keras

    model = MODELS.create(name, tuple(input_shape), int(num_classes), **(params or {}))
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
