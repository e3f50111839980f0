"""The search space and the sweep as data: each searched config key with its distribution
(`Param`, which asks an Optuna trial for its value), and the validated `Sweep` (base config,
space, objective, budget) that every process of a study rebuilds from JSON. The sweep file
itself is read by dlintro.sweep.sweepfile. No Optuna and no TensorFlow at import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dlintro import yamlfile
from dlintro.errors import UserError

OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize"}
DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str  # dotted, e.g. "optimizer.learning_rate"
    kind: str  # log_uniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value for an Optuna trial (a value fixed by enqueue_trial comes back as is)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        log = self.kind == "log_uniform"
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=log)

    def ends(self) -> list[Any]:
        """The values that stand for the whole range when checking it against the config."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {list(self.choices)}"
        extra = " log" if self.log and self.kind == "int" else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{extra}"


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: what every trial starts from, what varies, and the budget."""

    name: str  # the study's name: the sweep file's stem
    source: str  # the sweep file, as error messages show it
    base: dict[str, Any]  # the base config with the file's keys and --set applied (raw)
    params: tuple[Param, ...]
    trial_overrides: dict[str, Any] = field(default_factory=dict)
    objective: str = "val_accuracy"
    trials: int = 10
    minutes: float | None = None
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "params": {}})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median", "params": {}})

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def trial_raw(self, values: dict[str, Any]) -> dict[str, Any]:
        """A trial's config (raw): the base, the trial overrides, then the searched values."""
        raw = self.best_raw({})
        for key, value in {**self.trial_overrides, **values}.items():
            set_key(raw, key, value)
        return raw

    def best_raw(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config to train with found values (raw): the base and the values, without the
        trial overrides (which only shorten the search)."""
        raw = yamlfile.deep_copy(self.base)
        for key, value in values.items():
            set_key(raw, key, value)
        return raw

    def fingerprint(self) -> str:
        """What must match for a process to join an existing study: base, space, objective."""
        keep = {k: v for k, v in self.to_dict().items() if k in ("base", "params", "objective")}
        keep["trial_overrides"] = self.trial_overrides
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sweep:
        params = tuple(Param(**{**p, "choices": tuple(p["choices"])}) for p in d["params"])
        return cls(**{**d, "params": params})


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` in a raw config, making the sections on the way."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise UserError(f"'{prefix}' is a value, not a section, so '{key}' is no config key")
        node = child
    node[parts[-1]] = value
