"""The sweep file: a base config, the keys it changes, and the `sweep:` section, validated as
strictly as a config (every error names file:line, the key, and what would be right).

    base: ../mnist_conv.yaml          # a config file, relative to this one (or absolute);
                                      # without `base:` this file is the whole config
    data: {validation_split: 0.1}     # config keys: merged into the base, key by key
    sweep:
      objective: val_accuracy         # val_accuracy (maximized) | val_loss (minimized)
      trials: 8                       # the budget: trials in the study (all processes)
      minutes: null                   # and/or: start no trial after N minutes of a command
      sampler: tpe                    # tpe | random, or {name: tpe, params: {...}}
      pruner: {name: median, params: {n_startup_trials: 2}}
      trial_overrides: {train.steps: 1080}   # trials only (a short search); not best.yaml
      space:
        optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
        schedule.params.decay_steps: {int: [500, 5000], log: true}
        data.batch_size: {choice: [64, 128]}
        model.params.dropout: {uniform: [0.0, 0.5]}

Every searched value that the space can produce at its ends (and every choice) is validated
as a config before the sweep starts, so a key that is not in the base config (or its
builders' parameters), or a range the config refuses, is an error here, not in trial 7.
No Optuna (but dlintro.sweep.engines imports it to check the sampler and pruner) and no
TensorFlow at import.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from dlintro import yamlfile
from dlintro.errors import UserError
from dlintro.registry import did_you_mean
from dlintro.sweep import engines
from dlintro.sweep.space import DISTRIBUTIONS, OBJECTIVES, Param, Sweep, set_key
from dlintro.yamlfile import KeyPath

SECTION_KEYS = ("objective", "trials", "minutes", "sampler", "pruner", "trial_overrides", "space")
DOTTED_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
Positions = dict[KeyPath, str]


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and validate a sweep file (with `--set` overrides of its base config)."""
    from dlintro import config

    path = Path(path)
    src = yamlfile.shown(path)
    raw, pos = yamlfile.parse(yamlfile.read_config(path, src), src)
    if not isinstance(raw, dict) or not isinstance(raw.get("sweep"), dict):
        where = yamlfile.where(pos, ("sweep",), f"{src}:1")
        raise UserError(
            f"{where}: a sweep file needs a `sweep:` section with a `space:` of config keys "
            "(see configs/sweeps/mnist_conv_lr.yaml)"
        )
    section, base_ref = raw.pop("sweep"), raw.pop("base", None)
    merged, mpos = raw, dict(pos)
    if base_ref is not None:
        merged, mpos = _with_base(path, base_ref, raw, pos)
    for text in overrides:
        yamlfile.apply_override(merged, text, mpos)
    config.load(data=merged, positions=mpos)  # the base itself, with its own positions
    s = Section(section, pos, src)
    s.unknown_keys()
    sweep = Sweep(
        name=_study_name(path),
        source=src,
        base=merged,
        params=(),
        objective=s.choice("objective", "val_accuracy", list(OBJECTIVES)),
        trials=s.integer("trials", 10),
        minutes=s.minutes(),
        sampler=s.engine("sampler", "tpe"),
        pruner=s.engine("pruner", "median"),
    )
    cfg = config.load(data=merged, positions=mpos, check_names=False)
    if not cfg.data.validation_split:
        raise UserError(
            f"{yamlfile.where(mpos, ('data', 'validation_split'), src)}: sweep.objective "
            f"{sweep.objective} needs a validation set, but data.validation_split is 0: set it "
            "in the sweep file (data: {validation_split: 0.1})"
        )
    set_keys = {".".join(yamlfile.parse_override(t)[0]) for t in overrides}
    trial_overrides = s.trial_overrides()
    params = s.space(set_keys | set(trial_overrides))
    sweep = Sweep(**{**sweep.to_dict(), "params": params, "trial_overrides": trial_overrides})
    _check_values(sweep, mpos, s)
    return sweep


def _study_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    return name or "sweep"


def _with_base(
    path: Path, base_ref: Any, raw: dict[str, Any], pos: Positions
) -> tuple[dict[str, Any], Positions]:
    """The base config merged with this file's config keys, and where each key was written."""
    where = yamlfile.where(pos, ("base",), "")
    if not isinstance(base_ref, str) or not base_ref.strip():
        raise UserError(f"{where}: base: give the path of a config file, e.g. ../mnist_conv.yaml")
    base_path = Path(base_ref) if Path(base_ref).is_absolute() else path.parent / base_ref
    base_src = yamlfile.shown(base_path)
    try:
        base, bpos = yamlfile.parse(yamlfile.read_config(base_path, base_src), base_src)
    except UserError as exc:
        raise UserError(f"{where}: base: {exc}") from None
    if not isinstance(base, dict):
        raise UserError(f"{base_src}:1: a config is a mapping of keys (name:, model:, ...)")
    if "sweep" in base or "base" in base:
        raise UserError(f"{where}: base: {base_src} is a sweep file; give a config")
    merged = yamlfile.deep_copy(base)
    mpos = dict(bpos)
    _merge(merged, mpos, raw, pos, ())
    return merged, mpos


def _merge(base: dict, bpos: Positions, top: dict, tpos: Positions, path: KeyPath) -> None:
    for key, value in top.items():
        p = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], bpos, value, tpos, p)
            continue
        base[key] = yamlfile.deep_copy(value)
        for q in [q for q in bpos if q[: len(p)] == p]:
            del bpos[q]
        bpos.update({q: w for q, w in tpos.items() if q[: len(p)] == p})


def _check_values(sweep: Sweep, mpos: Positions, s: Section) -> None:
    """Validate, as a whole config, the base with the trial overrides and each end of every
    searched range (and each choice); an error points at the sweep file's line."""
    from dlintro import config

    def attempt(values: dict[str, Any], line: str, what: str) -> None:
        raw, pos = sweep.best_raw({}), dict(mpos)
        for key, value in values.items():
            path = tuple(key.split("."))
            try:
                set_key(raw, key, value)
            except UserError as exc:
                raise UserError(f"{line}: {exc}") from None
            for q in [q for q in pos if q[: len(path)] == path]:
                del pos[q]
            for n in range(1, len(path) + 1):
                pos.setdefault(path[:n], line)
            pos[path] = line
        try:
            config.load(data=raw, positions=pos)
        except UserError as exc:
            raise UserError(f"{exc} ({what})") from None

    overrides = sweep.trial_overrides
    for key, value in overrides.items():
        attempt({key: value}, s.where(("trial_overrides", key)), "in sweep.trial_overrides")
    attempt(overrides, s.where(("trial_overrides",)), "sweep.trial_overrides together")
    for p in sweep.params:
        for value in p.ends():
            what = f"in sweep.space: {p.describe()}"
            attempt({**overrides, p.key: value}, s.where(("space", p.key)), what)


class Section:
    """The `sweep:` mapping with its positions: typed getters that fail with file:line."""

    def __init__(self, raw: dict[str, Any], pos: Positions, src: str) -> None:
        self.raw, self.pos, self.src = raw, pos, src

    def where(self, path: KeyPath) -> str:
        return yamlfile.where(self.pos, ("sweep", *path), self.src)

    def fail(self, path: KeyPath, msg: str) -> UserError:
        return UserError(f"{self.where(path)}: {yamlfile.dotted(('sweep', *path))}: {msg}")

    def unknown_keys(self) -> None:
        for key in self.raw:
            if key not in SECTION_KEYS:
                hint = (
                    did_you_mean(str(key), SECTION_KEYS) or f" (valid: {', '.join(SECTION_KEYS)})"
                )
                raise UserError(f"{self.where((key,))}: unknown key 'sweep.{key}'{hint}")

    def choice(self, key: str, default: str, valid: list[str]) -> str:
        value = self.raw.get(key, default)
        if value not in valid:
            hint = did_you_mean(str(value), valid) or ""
            raise self.fail((key,), f"{value!r} is not one of {', '.join(valid)}{hint}")
        return str(value)

    def integer(self, key: str, default: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise self.fail((key,), f"{value!r}: give a whole number from 1 to 100000")
        return value

    def minutes(self) -> float | None:
        value = self.raw.get("minutes")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(("minutes",), f"{value!r}: give a number of minutes > 0, or null")
        return float(value)

    def engine(self, kind: str, default: str) -> dict[str, Any]:
        value = self.raw.get(kind, default)
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise self.fail((kind,), "give a name, or {name: ..., params: {...}}")
        for key in value:
            if key not in ("name", "params"):
                hint = did_you_mean(str(key), ["name", "params"]) or " (valid: name, params)"
                raise UserError(
                    f"{self.where((kind, key))}: unknown key 'sweep.{kind}.{key}'{hint}"
                )
        params = value.get("params") or {}
        if not isinstance(params, dict):
            raise self.fail((kind, "params"), "give a mapping of parameters")
        spec = {"name": value["name"], "params": dict(params)}
        engines.check(kind, spec, lambda path: self.where((kind, *path)))
        return spec

    def trial_overrides(self) -> dict[str, Any]:
        value = self.raw.get("trial_overrides") or {}
        if not isinstance(value, dict):
            raise self.fail(("trial_overrides",), "give a mapping of dotted keys to values")
        for key in value:
            self.dotted_key(("trial_overrides", key), key)
        return dict(value)

    def dotted_key(self, path: KeyPath, key: Any) -> None:
        if not isinstance(key, str) or not DOTTED_KEY.match(key):
            raise UserError(
                f"{self.where(path)}: {key!r} is not a dotted config key such as "
                "optimizer.learning_rate (list items cannot be searched)"
            )

    def space(self, taken: set[str]) -> tuple[Param, ...]:
        space = self.raw.get("space")
        if not isinstance(space, dict) or not space:
            raise self.fail(
                ("space",),
                "give the searched config keys, e.g. "
                "optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}",
            )
        params = []
        for key, spec in space.items():
            self.dotted_key(("space", key), key)
            if key in taken:
                raise UserError(
                    f"{self.where(('space', key))}: '{key}' is searched, so it cannot also be "
                    "set by --set or sweep.trial_overrides"
                )
            params.append(self.param(key, spec))
        return tuple(params)

    def param(self, key: str, spec: Any) -> Param:
        path: KeyPath = ("space", key)
        shape = "{log_uniform: [low, high]}, {uniform: [...]}, {int: [...]} or {choice: [...]}"
        if not isinstance(spec, dict):
            raise self.fail(path, f"give a distribution: {shape}")
        kinds = [k for k in spec if k in DISTRIBUTIONS]
        for k in spec:
            if k not in (*DISTRIBUTIONS, "log", "step"):
                hint = did_you_mean(str(k), [*DISTRIBUTIONS, "log", "step"]) or f"; give {shape}"
                raise self.fail((*path, k), f"unknown distribution or option '{k}'{hint}")
        if len(kinds) != 1:
            raise self.fail(path, f"give exactly one distribution: {shape}")
        kind = kinds[0]
        value, at = spec[kind], (*path, kind)
        if kind == "choice":
            return self.choice_param(key, value, at, spec)
        if not isinstance(value, list) or len(value) != 2 or not all(_number(v) for v in value):
            raise self.fail(at, f"{value!r}: give [low, high], two numbers")
        low, high = value
        if kind == "int" and not all(isinstance(v, int) for v in value):
            raise self.fail(at, f"{value!r}: int takes whole numbers [low, high]")
        if not low < high:
            raise self.fail(at, f"{value!r}: low must be below high")
        log = kind == "log_uniform" or bool(spec.get("log", False))
        if not isinstance(spec.get("log", False), bool) or ("log" in spec and kind != "int"):
            raise self.fail((*path, "log"), "log: true|false goes with int (log_uniform is log)")
        if log and low <= 0:
            raise self.fail(at, f"{value!r}: a log scale needs low > 0")
        step = spec.get("step")
        if step is not None:
            if kind == "log_uniform" or log or not _number(step) or step <= 0:
                raise self.fail((*path, "step"), f"{step!r}: a step > 0, for uniform or int")
            if kind == "int" and not isinstance(step, int):
                raise self.fail((*path, "step"), f"{step!r}: int takes a whole step")
        if kind != "int":
            low, high = float(low), float(high)
        return Param(key, kind, low, high, log, step)

    def choice_param(self, key: str, value: Any, at: KeyPath, spec: dict) -> Param:
        if set(spec) != {"choice"}:
            raise self.fail(at[:-1], "choice takes no log or step")
        ok = (str, int, float, bool, type(None))
        if (
            not isinstance(value, list)
            or len(value) < 2
            or not all(isinstance(v, ok) for v in value)
        ):
            raise self.fail(at, f"{value!r}: give a list of two or more values (numbers, text)")
        if len({json.dumps(v) for v in value}) != len(value):
            raise self.fail(at, f"{value!r}: a value appears twice")
        return Param(key, "choice", choices=tuple(value))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
