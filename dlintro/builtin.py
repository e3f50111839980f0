"""dlintro's layers as built-in Keras layers, so that a saved model loads in plain Keras
(`keras.saving.load_model`) without importing dlintro: inference.keras and the `keras` export
(dlintro.artifacts, dlintro.export).

`builtin_layers(model)` copies a model (nested models included, e.g. a test-time-augmented
one) with every layer that has a built-in equivalent replaced by built-in layers computing
exactly the same, on the model's own weights. LocalResponseNormalization (alexnet, googlenet)
has none, so models with it load after `import dlintro.models`. Keras is imported inside the
functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer of a model, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)


def builtin_layers(model: Any) -> Any:
    """`model`, or a copy computing exactly the same in which dlintro's layers are built-in
    Keras layers (so that plain Keras loads it without importing dlintro), nested models
    included (a test-time-augmented model: dlintro.tta.wrap). None of the replacements adds or
    drops a weight, so the copy takes the model's weights in order.

    - ShortcutPadding(filters, strides) keeps every strides-th row and column and appends zero
      channels: MaxPooling2D(pool_size=1, strides) picks the same positions (a max of one
      value), and a Reshape to [h, w, c, 1], ZeroPadding3D on the channel axis and a Reshape
      back append the same zeros.
    - BatchNorm is Keras' BatchNormalization outside dlintro's training step
      (dlintro.models.batchnorm): that layer, same config and weights.
    - PatchWhitening is a Conv2D with a frozen kernel: a Conv2D of the same configuration and
      weights (the same convolution; its kernel is trainable again, as any Conv2D's).
    - TTAView (a mirror and a move with reflection) is a fixed permutation of rows and columns
      (`permuted_view`): slices (Cropping2D) joined by Concatenate, pure data movement.
    - TTAMean's weighted sum is Rescaling(weight) per view and one Add: the same float32
      products, summed in the same order.
    - A layer initialized by dlintro's Dirac (cifar_speednet's convolutions) keeps its class:
      only its config names Dirac's `rest` initializer instead (builtin_config).
    """
    import keras

    from dlintro.models.batchnorm import BatchNorm
    from dlintro.models.blocks import PatchWhitening
    from dlintro.models.resnet import ShortcutPadding
    from dlintro.tta import TTAMean, TTAView

    replace = {ShortcutPadding: shortcut_padding, PatchWhitening: patch_whitening,
               TTAView: permuted_view, TTAMean: weighted_sum, BatchNorm: batch_norm}  # fmt: skip
    layers = list(all_layers(model))
    if not any(type(layer) in replace or builtin_config(layer) for layer in layers):
        return model

    def clone(layer: Any) -> Any:
        make = replace.get(type(layer))
        if make is not None:
            return make(layer)
        return layer.__class__.from_config(builtin_config(layer) or layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def builtin_config(layer: Any) -> dict[str, Any] | None:
    """The layer's config with dlintro's Dirac initializers replaced by their `rest` initializer
    (Keras' glorot_uniform or he_normal), or None when it names none. Initializers only set the
    first weights: a copied or loaded model takes the trained ones, so its output is unchanged;
    the config just has to load without dlintro."""
    import keras

    from dlintro.models.blocks import Dirac, initializer

    config = layer.get_config()
    changed = {}
    for key, value in config.items():
        if key.endswith("_initializer") and isinstance(value, dict):
            init = keras.initializers.deserialize(value)
            if isinstance(init, Dirac):
                changed[key] = keras.initializers.serialize(initializer(init.rest, init.seed))
    return config | changed if changed else None


def shortcut_padding(layer: Any) -> Any:
    """ShortcutPadding as built-in layers (see builtin_layers)."""
    import keras

    _, h, w, c = layer.input.shape
    s, policy = layer.strides, layer.dtype_policy
    h, w = -(-h // s), -(-w // s)
    return keras.Sequential(
        [
            keras.layers.MaxPooling2D(1, strides=s, dtype=policy),
            keras.layers.Reshape((h, w, c, 1), dtype=policy),
            keras.layers.ZeroPadding3D(((0, 0), (0, 0), (0, layer.filters - c)), dtype=policy),
            keras.layers.Reshape((h, w, layer.filters), dtype=policy),
        ],
        name=layer.name,
    )


def batch_norm(layer: Any) -> Any:
    """dlintro's BatchNorm as Keras' BatchNormalization (see builtin_layers)."""
    import keras

    return keras.layers.BatchNormalization.from_config(layer.get_config())


def patch_whitening(layer: Any) -> Any:
    """PatchWhitening as the Conv2D it is (its weights are set by builtin_layers)."""
    import keras

    config = builtin_config(layer) or layer.get_config()
    config.pop("eps")
    return keras.layers.Conv2D.from_config(config)


def reflected(i: int, n: int) -> int:
    """Index `i` of an axis of length n, reflected at its ends without repeating the edge (as
    reflection padding: -1 -> 1, n -> n - 2)."""
    return -i if i < 0 else 2 * (n - 1) - i if i > n - 1 else i


def permuted_view(layer: Any) -> Any:
    """TTAView(flip, dy, dx) as built-in layers: output row i is input row reflected(i - dy),
    output column j is column reflected(j - dx) read right to left when mirrored."""
    import keras

    _, h, w, c = layer.input.shape
    rows = [reflected(i - layer.dy, h) for i in range(h)]
    cols = [reflected(j - layer.dx, w) for j in range(w)]
    cols = cols[::-1] if layer.flip else cols
    if rows == list(range(h)) and cols == list(range(w)):
        return keras.layers.Identity(dtype="float32", name=layer.name)
    inputs = keras.Input((h, w, c), dtype=layer.input.dtype, name=f"{layer.name}_images")
    outputs = take(take(inputs, rows, 1, "rows"), cols, 2, "cols")
    return keras.Model(inputs, outputs, name=layer.name)


def take(x: Any, index: list[int], axis: int, name: str) -> Any:
    """x's rows (axis 1) or columns (axis 2) in the order `index`, with built-in layers: one
    Cropping2D per run of consecutive indices, joined by Concatenate (x itself when `index`
    is the identity)."""
    import keras

    n = x.shape[axis]
    if index == list(range(n)):
        return x
    runs = [[index[0], index[0]]]
    for k in index[1:]:
        if k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    parts = []
    for r, (first, last) in enumerate(runs):
        crop = ((first, n - 1 - last), (0, 0))
        crop = crop if axis == 1 else crop[::-1]
        parts.append(keras.layers.Cropping2D(crop, dtype="float32", name=f"{name}{r}")(x))
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(axis=axis, dtype="float32", name=name)(parts)


def weighted_sum(layer: Any) -> Any:
    """TTAMean as built-in layers: each view's probabilities x its weight, then their sum."""
    import keras

    shapes = [tuple(x.shape[1:]) for x in layer.input]
    inputs = [keras.Input(s, name=f"{layer.name}_view{i}") for i, s in enumerate(shapes)]
    terms = [
        keras.layers.Rescaling(weight, dtype="float32", name=f"{layer.name}_weight{i}")(x)
        for i, (weight, x) in enumerate(zip(layer.view_weights, inputs, strict=True))
    ]
    outputs = keras.layers.Add(dtype="float32", name=f"{layer.name}_sum")(terms)
    return keras.Model(inputs, outputs, name=layer.name)


__all__ = [
    "all_layers",
    "batch_norm",
    "builtin_config",
    "builtin_layers",
    "patch_whitening",
    "permuted_view",
    "reflected",
    "shortcut_padding",
    "take",
    "weighted_sum",
]
