"""Optuna's samplers and pruners by the names a sweep file uses, with their parameters checked
against the class's own signature before anything runs. Optuna is imported inside.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dlintro.errors import UserError
from dlintro.registry import did_you_mean

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "percentile": "PercentilePruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
# Parameters that take Python callables or objects, which a YAML file cannot give.
_NOT_FROM_YAML = {"gamma", "weights", "constraints_func", "categorical_distance_func"}


def _classes(kind: str) -> dict[str, Any]:
    import optuna

    table, module = (SAMPLERS, optuna.samplers) if kind == "sampler" else (PRUNERS, optuna.pruners)
    return {name: getattr(module, cls) for name, cls in table.items()}


def _param_names(cls: Any) -> list[str]:
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.name not in ("self", *_NOT_FROM_YAML)]


def build(kind: str, name: str, params: dict[str, Any], seed_offset: int = 0) -> Any:
    """The Optuna sampler or pruner `name` with `params`; a sampler's `seed` (when given) is
    moved by `seed_offset`, so that processes sharing a study do not draw the same points."""
    cls = _classes(kind)[name]
    params = dict(params)
    if kind == "sampler" and params.get("seed") is not None:
        params["seed"] = int(params["seed"]) + seed_offset
    return cls(**params)


def check(kind: str, spec: dict[str, Any], where: Callable[[tuple[str, ...]], str]) -> None:
    """Refuse an unknown name or parameter, or values Optuna refuses, as one UserError line;
    `where(path)` says where a key of the section was written."""
    classes = _classes(kind)
    name, params = spec["name"], spec["params"]
    if name not in classes:
        hint = did_you_mean(name, list(classes)) or f" (one of {', '.join(classes)})"
        raise UserError(f"{where(('name',))}: sweep.{kind}.name: unknown {kind} '{name}'{hint}")
    valid = _param_names(classes[name])
    for key in params:
        if key not in valid:
            hint = did_you_mean(key, valid) or (
                f" (valid: {', '.join(valid)})" if valid else f" ({name} takes none)"
            )
            raise UserError(
                f"{where(('params', key))}: sweep.{kind}.params.{key}: unknown parameter of "
                f"{kind} '{name}'{hint}"
            )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "experimental" notes
        try:
            build(kind, name, params)
        except (TypeError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            raise UserError(f"{where(('params',))}: sweep.{kind} {name}: {msg}") from None
