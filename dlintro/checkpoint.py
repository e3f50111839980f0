"""Training checkpoints: everything an exact continuation needs, written atomically.

A checkpoint is a directory `checkpoints/step-<N>/` holding every model variable (weights,
batch-norm statistics and the dropout seed-generator states), every optimizer variable (slots,
iteration count, loss scale) and `state.json` (step, epoch, wall time so far, the epoch's
running metric sums, and the state of a metric-driven schedule such as reduce_on_plateau,
whose numbers JSON keeps exactly: float32 and float64 values round-trip). It is written
into a temporary directory that is renamed into place only when complete, so a process killed
at any moment leaves either the new checkpoint or none; the previous one is removed only after
the new one exists. The data position needs no saving: the training stream is a pure function
of the seed and the step (see data.pipeline.make_train_stream).

Read back, a checkpoint is checked whole before a resume writes anything (`choose`, `check`:
state.json through its schema, every array against the recorded shapes, numbers only, never
pickled objects; `fits`: against the configured model). A damaged one is a UserError naming
the file and the newest intact checkpoint before it, with the command that resumes from it
(`--from-checkpoint STEP`; 0 starts the run over).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dlintro import limits, runfiles
from dlintro.errors import DlintroError, UserError

PREFIX = runfiles.CHECKPOINT_PREFIX


class Policy:
    """When the training loop saves: at epoch ends (`at_epoch_end`), at the last step, every
    `every_steps` steps, every `every_minutes` minutes, and when it is stopping (a signal);
    never twice for one step. `cfg` is the config's checkpoint section."""

    def __init__(
        self, cfg: Any, step: int, total_steps: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg, self.total_steps, self.clock = cfg, total_steps, clock
        self.saved(step)

    def due(self, step: int, epoch_end: bool, stopping: bool) -> bool:
        """Whether a checkpoint is due after global step `step`."""
        cfg = self.cfg
        if step <= self.last_step:
            return False
        return bool(
            (epoch_end and cfg.at_epoch_end)
            or step == self.total_steps
            or (cfg.every_steps and step - self.last_step >= cfg.every_steps)
            or (cfg.every_minutes and self.clock() - self.last_time >= 60 * cfg.every_minutes)
            or stopping
        )

    def saved(self, step: int) -> None:
        """Note that the state at `step` is saved (or, at the start, is where training began)."""
        self.last_step, self.last_time = step, self.clock()


def _variables(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, list]:
    """The groups of variables a checkpoint holds (<group>.npz each): the model's, the
    optimizer's, and what training keeps beside them (`optimizer.checkpoint_groups`, set by
    loop.StepRunner: train.ema's average, like Keras' own optimizer-held EMA)."""
    groups = {"model": list(model.variables), "optimizer": list(optimizer.variables)}
    return groups | {k: list(v) for k, v in getattr(optimizer, "checkpoint_groups", {}).items()}


def save(
    directory: Path,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint `step-<state['step']>` atomically and keep only the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{state['step']:09d}"
    tmp = directory / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for group, variables in _variables(model, optimizer).items():
            arrays = {f"{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
            with (tmp / f"{group}.npz").open("wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
        shapes = {
            g: [[v.path, list(v.shape)] for v in vs]
            for g, vs in _variables(model, optimizer).items()
        }
        record = dict(state, variables=shapes)
        with (tmp / "state.json").open("w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a checkpoint of the same step (e.g. epoch end after a step save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest(directory)
        kept = f"the previous checkpoint ({previous.name}) is intact" if previous else "none kept"
        raise DlintroError(
            f"{final}: could not write the checkpoint ({exc.strerror or exc}); {kept}"
        ) from None
    for old in all_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def all_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    return [path for _, path in runfiles.checkpoint_dirs(directory)]


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = all_checkpoints(directory)
    return found[-1] if found else None


class _Damage(Exception):
    """A damaged checkpoint file (turned into a UserError with where to resume instead)."""

    def __init__(self, file: Path, why: str) -> None:
        super().__init__(f"{file}: the checkpoint is damaged ({why})")


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json as written, validated by its schema (runfiles.CheckpointState);
    a damaged one is a UserError naming the file and the checkpoint to resume from instead."""
    try:
        return _state(path)
    except _Damage as exc:
        raise UserError(f"{exc}; {_instead(path)}") from None


def check(path: Path) -> dict[str, Any]:
    """Read checkpoint `path` whole without loading it anywhere: its state, and every array of
    model.npz and optimizer.npz against the shapes the state records. Return the state; a
    damaged checkpoint is a UserError naming the file, the previous intact checkpoint and how
    to resume from it. A resume calls this before it writes anything."""
    try:
        return _check(path)
    except _Damage as exc:
        raise UserError(f"{exc}; {_instead(path)}") from None


def choose(directory: Path, step: int | None = None) -> Path | None:
    """The checkpoint a resume starts from: the newest, or the one of `step` (0: none, the
    run starts over), checked whole (see `check`)."""
    found = dict(runfiles.checkpoint_dirs(directory))
    if step is None:
        start = found[max(found)] if found else None
    elif step == 0:
        start = None
    elif step in found:
        start = found[step]
    else:
        have = ", ".join(str(s) for s in sorted(found)) or "none"
        raise UserError(
            f"{directory}: no checkpoint of step {step} (checkpoints: {have}; 0 starts over)"
        )
    if start is not None:
        check(start)
    return start


def discard_after(directory: Path, step: int) -> None:
    """Remove the checkpoints after `step`: a resume from an earlier checkpoint trains that
    stretch again (as its history rows after `step` are dropped)."""
    for s, path in runfiles.checkpoint_dirs(directory):
        if s > step:
            shutil.rmtree(path, ignore_errors=True)


def fits(path: Path, state: dict[str, Any], model: keras.Model, optimizer: Any) -> None:
    """Refuse a checkpoint whose variables are not the configured model's and optimizer's
    (builds the optimizer's variables if they are not yet)."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    for group, variables in _variables(model, optimizer).items():
        # Variable paths carry per-process counters (seed_generator_3, ...): compare shapes.
        saved = [tuple(shape) for _, shape in state.get("variables", {}).get(group, [])]
        if saved != [tuple(v.shape) for v in variables]:
            raise UserError(
                f"{path}: the checkpoint holds different {group} variables than the configured "
                f"model has ({len(saved)} saved, {len(variables)} now); it belongs to another "
                "model or optimizer"
            )


def restore(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """Load checkpoint `path` into `model` and `optimizer` (built first); return its state."""
    state = read_state(path)
    fits(path, state, model, optimizer)
    try:
        for group, variables in _variables(model, optimizer).items():
            _arrays(path, group, [tuple(v.shape) for v in variables], variables)
    except _Damage as exc:
        raise UserError(f"{exc}; {_instead(path)}") from None
    return state


def _state(path: Path) -> dict[str, Any]:
    file = path / "state.json"
    try:
        state = runfiles.load_dict(file, runfiles.CheckpointState)
    except UserError as exc:
        raise _Damage(file, str(exc).removeprefix(f"{file}: ")) from None
    if state["step"] != _step_of(path):
        raise _Damage(file, f"it says step {state['step']}, its directory {path.name}")
    return state


def _check(path: Path) -> dict[str, Any]:
    state = _state(path)
    for group in ("model", "optimizer"):
        recorded = state.get("variables", {}).get(group, [])
        _arrays(path, group, [tuple(shape) for _, shape in recorded], None)
    return state


def _arrays(path: Path, group: str, shapes: list[tuple[int, ...]], variables: list | None) -> None:
    """Read every array of `group`.npz, check its shape and numeric type, and assign it to
    `variables` when given. Anything wrong with the file is the checkpoint's damage."""
    file = path / f"{group}.npz"
    try:
        problem = limits.not_regular(file)
    except OSError as exc:
        problem = "missing" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
    if problem:
        raise _Damage(file, problem)
    try:
        with np.load(file, allow_pickle=False) as arrays:
            for i, shape in enumerate(shapes):
                key = f"{i:05d}"
                if key not in arrays.files:
                    raise _Damage(file, f"array {key} is missing")
                value = arrays[key]
                if value.dtype.kind not in "biuf":
                    raise _Damage(file, f"array {key} is not numbers ({value.dtype})")
                if tuple(value.shape) != shape:
                    raise _Damage(file, f"array {key} has shape {value.shape}, not {shape}")
                if variables is not None:
                    variables[i].assign(value)
    except _Damage:
        raise
    except Exception as exc:  # a broken zip, a truncated array, pickled objects, ...
        raise _Damage(file, _why(exc)) from None


def _why(exc: Exception) -> str:
    """What is wrong with an array file, in dlintro's words (numpy's would suggest loading
    pickled data, which a checkpoint never holds)."""
    text = " ".join(str(exc).split())
    if "pickle" in text:
        return "not an archive of numeric arrays"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"unreadable: {text[:80] or type(exc).__name__}"


def _step_of(path: Path) -> int:
    digits = path.name.removeprefix(PREFIX)
    return int(digits) if digits.isdigit() else -1


def _instead(path: Path) -> str:
    """Where a resume can start instead of damaged checkpoint `path`: the newest intact
    checkpoint before it, else the start of the run."""
    run_dir = path.parent.parent
    for step, earlier in reversed(runfiles.checkpoint_dirs(path.parent)):
        if step >= _step_of(path):
            continue
        try:
            _check(earlier)
        except _Damage:
            continue
        return (
            f"the previous checkpoint {earlier.name} is intact: resume from it with "
            f"dlintro train --resume {run_dir} --from-checkpoint {step}"
        )
    return (
        "there is no intact earlier checkpoint: start the run over with "
        f"dlintro train --resume {run_dir} --from-checkpoint 0"
    )
