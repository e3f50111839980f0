"""Per-layer shapes, parameter counts with their arithmetic, and multiply-accumulate counts.

`summarize()` turns a built functional (or Sequential) Keras model into plain dataclasses that the
CLI renders and `to_dict()` serialises. Each layer with weights gets the formula behind its
parameter count, e.g. ``6 x (5 x 5 x 3 + 1) = 456``, so that a reader can check the number by hand.

MACs count the multiply-accumulates of one image's forward pass through the layers that carry
weights (convolutions, dense, normalization); parameter-free layers (pooling, activations, adds,
...) count 0 and embeddings count 0 (a lookup). A normalization layer counts one multiply-add per
output element: its inference form, once the statistics are folded into a scale and a shift.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import keras

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_NORMS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@dataclass
class LayerSummary:
    """One leaf layer: its output shape (no batch dimension), parameters and MACs per image."""

    name: str
    type: str
    output_shape: tuple[int | None, ...]
    params: int
    trainable_params: int
    arithmetic: str
    macs: int


@dataclass
class ModelSummary:
    """A whole model: its leaf layers in graph order and the totals."""

    name: str
    input_shape: tuple[int | None, ...]
    layers: list[LayerSummary] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    macs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists under json.dumps)."""
        return asdict(self)


def format_count(n: int) -> str:
    """An integer with thousands separators: 1192042 -> "1,192,042"."""
    return f"{n:,}"


def format_macs(n: float) -> str:
    """Three significant digits and a unit: "950", "850 K", "12.3 M", "1.45 G"."""
    if n < 1000:
        return str(int(n))
    value, units = float(n), ["K", "M", "G", "T", "P"]
    for i, unit in enumerate(units):
        value /= 1000
        decimals = 2 if value < 10 else 1 if value < 100 else 0
        text = f"{value:.{decimals}f}"
        if float(text) < 1000 or i == len(units) - 1:
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def summarize(model: keras.Model) -> ModelSummary:
    """Summarise a built functional or Sequential model, flattening nested sub-models.

    Leaf layers inside a sub-model are named ``outer/inner``; input layers are left out (the
    summary has `input_shape`). Every formula is checked against ``layer.count_params()`` and
    the total against ``model.count_params()``: a wrong formula raises instead of printing.
    """
    layers: list[LayerSummary] = []
    seen: set[int] = set()
    for name, layer in _leaves(model, ""):
        if id(layer) in seen:  # a layer shared between a sub-model and its parent
            continue
        seen.add(id(layer))
        layers.append(_summarize_layer(name, layer))
    total = sum(s.params for s in layers)
    if total != model.count_params():
        raise AssertionError(
            f"{model.name}: layers sum to {total} parameters, model has {model.count_params()}"
        )
    trainable = sum(s.trainable_params for s in layers)
    return ModelSummary(
        name=model.name,
        input_shape=_shape(model.inputs[0]),
        layers=layers,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        macs=sum(s.macs for s in layers),
    )


def _leaves(model: keras.Model, prefix: str) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yield (qualified name, layer) for every non-input leaf layer, depth first."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            yield from _leaves(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def _shape(tensor: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def _dims(variable: Any) -> list[int]:
    return [int(d) for d in variable.shape]


def _size(variables: list[Any]) -> int:
    return sum(math.prod(_dims(v)) for v in variables)


def _summarize_layer(name: str, layer: keras.layers.Layer) -> LayerSummary:
    """Shape, parameters, arithmetic and MACs of one leaf layer (first call if shared)."""
    try:
        out = _shape(keras.tree.flatten(layer.output)[0])
    except (AttributeError, ValueError) as exc:
        raise ValueError(
            f"layer {name!r} has no recorded output; summarize() needs a functional or "
            "Sequential model that has been built on an Input"
        ) from exc
    params = int(layer.count_params())
    trainable = _size(layer.trainable_weights)
    arithmetic, macs = "", 0
    if params:
        n_out = math.prod(out) if None not in out else 0  # unknown spatial size: MACs unknown
        found = _formula(layer, n_out)
        if found is None:  # a layer type without a known formula: the plain count
            arithmetic = format_count(params)
        else:
            expr, value, macs = found
            if value != params:
                raise AssertionError(f"{name}: formula {expr} gives {value}, layer has {params}")
            arithmetic = f"{expr} = {format_count(params)}"
        if trainable != params:
            arithmetic += f" ({format_count(trainable)} trainable)"
    return LayerSummary(name, type(layer).__name__, out, params, trainable, arithmetic, macs)


def _times(*factors: int) -> str:
    return " x ".join(str(f) for f in factors)


def _plus_bias(inner: str, bias: int) -> str:
    return f"({inner} + 1)" if bias else inner


def _formula(layer: keras.layers.Layer, n_out: int) -> tuple[str, int, int] | None:
    """(expression, the value it computes to, MACs) for known layer types, else None.

    n_out is the number of output elements per image (0 when not fully known).
    """
    bias = int(getattr(layer, "bias", None) is not None)
    if isinstance(layer, _SEPARABLE):
        *k, cin, mult = _dims(layer.depthwise_kernel)
        filters, mid, kk = _dims(layer.pointwise_kernel)[-1], cin * mult, math.prod(k)
        depthwise = _times(*k, cin, mult) if mult > 1 else _times(*k, cin)
        pointwise = f"{filters} x {_plus_bias(str(mid), bias)}"
        value = kk * mid + filters * (mid + bias)
        return f"{depthwise} + {pointwise}", value, n_out // filters * mid * (kk + filters)
    if isinstance(layer, _DEPTHWISE):
        *k, cin, mult = _dims(layer.kernel)
        channels = _times(cin, mult) if mult > 1 else str(cin)
        value = cin * mult * (math.prod(k) + bias)
        return f"{channels} x {_plus_bias(_times(*k), bias)}", value, n_out * math.prod(k)
    if isinstance(layer, _CONVS):
        *k, cin_per_group, filters = _dims(layer.kernel)
        per_filter = math.prod(k) * cin_per_group
        expr = f"{filters} x {_plus_bias(_times(*k, cin_per_group), bias)}"
        return expr, filters * (per_filter + bias), n_out * per_filter
    if isinstance(layer, keras.layers.Dense):
        fan_in, units = _dims(layer.kernel)
        return f"{units} x {_plus_bias(str(fan_in), bias)}", units * (fan_in + bias), n_out * fan_in
    if isinstance(layer, _NORMS):
        sizes = [math.prod(_dims(w)) for w in layer.weights]
        return _times(len(sizes), sizes[0]), len(sizes) * sizes[0], n_out
    if isinstance(layer, keras.layers.Embedding):
        vocab, dim = _dims(layer.embeddings)
        return _times(vocab, dim), vocab * dim, 0
    return None
