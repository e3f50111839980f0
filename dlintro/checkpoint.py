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

from dlintro.errors import DlintroError, UserError

PREFIX = "step-"


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
    return {"model": list(model.variables), "optimizer": list(optimizer.variables)}


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
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    return sorted(p for p in found if (p / "state.json").is_file())


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = all_checkpoints(directory)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable checkpoint state: {exc}") from None


def restore(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """Load checkpoint `path` into `model` and `optimizer` (built first); return its state."""
    state = read_state(path)
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
        try:
            with np.load(path / f"{group}.npz") as arrays:
                for i, v in enumerate(variables):
                    value = arrays[f"{i:05d}"]
                    if tuple(value.shape) != tuple(v.shape):
                        raise UserError(f"{path}: {v.path} has shape {value.shape}, not {v.shape}")
                    v.assign(value)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: damaged checkpoint ({group}.npz): {exc}") from None
    return state
