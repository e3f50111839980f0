"""The training run: data, model and optimizer from a Config, Keras' fit loop, and everything a
run leaves behind (config.yaml, meta.json, history.csv, logs/, model.keras, metrics.json).

Printing belongs to the CLI: progress goes to a `Reporter` that the caller supplies.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

import dlintro
from dlintro import data, distribute, evaluate, models, optim, runs
from dlintro.config import Config
from dlintro.errors import UserError


class Reporter(Protocol):
    """Where training progress goes (a rich progress bar, plain lines, or nowhere)."""

    def start(self, plan: dict[str, Any]) -> None: ...
    def update(self, logs: dict[str, Any]) -> None: ...
    def epoch_end(self, logs: dict[str, Any]) -> None: ...
    def end(self) -> None: ...


class SilentReporter:
    """A reporter that shows nothing (library use and tests)."""

    def start(self, plan: dict[str, Any]) -> None:
        pass

    def update(self, logs: dict[str, Any]) -> None:
        pass

    def epoch_end(self, logs: dict[str, Any]) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass(frozen=True)
class Result:
    """What a finished run reports."""

    run_dir: Path
    metrics: dict[str, Any]
    steps: int
    epochs: int
    wall_seconds: float
    train_seconds: float
    images_per_second: float


def plan_length(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, epochs to run) from `train.steps` or `train.epochs`."""
    if cfg.train.steps is not None:
        return cfg.train.steps, math.ceil(cfg.train.steps / steps_per_epoch)
    assert cfg.train.epochs is not None
    return cfg.train.epochs * steps_per_epoch, cfg.train.epochs


def execution_steps(wanted: int, steps_per_epoch: int, total_steps: int) -> int:
    """A steps-per-execution that divides both the epoch and the last partial epoch, so that a
    run stops exactly at `total_steps` and epoch ends line up with executions."""
    k = math.gcd(wanted, steps_per_epoch)
    rest = total_steps % steps_per_epoch
    return math.gcd(k, rest) if rest else k


def run(
    cfg: Config,
    run_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    command: list[str] | None = None,
    started: float | None = None,
) -> Result:
    """Train `cfg` end to end and return the test metrics and timings.

    `started` (a time.time() value) is when the user's command began, so that wall time
    includes start-up and data loading; by default it is now.

    Input problems (data files, model arguments, the run directory) raise UserError before the
    run directory is created, so a bad invocation leaves nothing behind.
    """
    reporter = reporter or SilentReporter()
    started = started if started is not None else time.time()
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    try:
        bundle = data.build(cfg.data, cfg.seed, data_dir)
        strategy = distribute.build(cfg)
        total_steps, epochs = plan_length(cfg, bundle.steps_per_epoch)
        with strategy.scope():
            model = models.build(
                cfg.model.name, bundle.info.input_shape, bundle.info.num_classes, cfg.model.params
            )
            try:
                optimizer = optim.build(
                    cfg.optimizer, cfg.schedule, total_steps, bundle.steps_per_epoch
                )
            except ValueError as exc:
                raise UserError(f"optimizer/schedule: {exc}") from None
            spe = execution_steps(
                cfg.train.steps_per_execution, bundle.steps_per_epoch, total_steps
            )
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                jit_compile=cfg.train.jit_compile,
                steps_per_execution=spe,
            )
        path = runs.create(cfg.name, run_dir)
        return _fit(cfg, path, bundle, model, total_steps, epochs, reporter, started, command)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _fit(
    cfg: Config,
    path: Path,
    bundle: Any,
    model: keras.Model,
    total_steps: int,
    epochs: int,
    reporter: Reporter,
    started: float,
    command: list[str] | None,
) -> Result:
    runs.write_text(path / "config.yaml", cfg.to_yaml())
    meta: dict[str, Any] = {
        "status": "running",
        "pid": os.getpid(),
        "name": cfg.name,
        "command": command if command is not None else sys.argv,
        "started": _now(),
        "seed": cfg.seed,
        "versions": _versions(),
        "machine": _machine(),
        "data": {
            "dataset": bundle.info.name,
            "num_train": bundle.num_train,
            "num_validation": bundle.num_validation,
            "num_test": bundle.num_test,
            "input_shape": list(bundle.info.input_shape),
            "class_names": list(bundle.info.class_names),
            "normalization": bundle.normalization,
        },
        "plan": {
            "total_steps": total_steps,
            "epochs": epochs,
            "steps_per_epoch": bundle.steps_per_epoch,
            "batch_size": cfg.data.batch_size,
            "steps_per_execution": model.steps_per_execution,
        },
        "model": {"name": cfg.model.name, "params": int(model.count_params())},
    }
    runs.write_json(path / "meta.json", meta)
    progress = _Progress(cfg, bundle, total_steps, epochs, path, reporter)
    reporter.start(
        {
            "run_dir": str(path),
            "model": cfg.model.name,
            "params": int(model.count_params()),
            "dataset": bundle.info.name,
            "num_train": bundle.num_train,
            "total_steps": total_steps,
            "epochs": epochs,
            "batch_size": cfg.data.batch_size,
        }
    )
    try:
        try:
            model.fit(
                bundle.train,
                epochs=epochs,
                validation_data=bundle.validation,
                callbacks=[progress],
                shuffle=False,  # the pipeline shuffles, with the seed
                verbose=0,
            )
        finally:
            reporter.end()
            progress.close()
        train_seconds = progress.train_seconds
        _save_model(model, path / "model.keras")
        metrics = evaluate.evaluate(model, bundle.test, list(bundle.info.class_names))
        runs.write_json(path / "metrics.json", metrics)
        progress.log_test(metrics)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        runs.update_meta(path, status=status, ended=_now(), error=f"{type(exc).__name__}: {exc}")
        raise
    wall = time.time() - started
    ips = progress.images_seen / train_seconds if train_seconds > 0 else 0.0
    runs.update_meta(
        path,
        status="finished",
        ended=_now(),
        wall_seconds=round(wall, 2),
        train_seconds=round(train_seconds, 2),
        images_per_second=round(ips, 1),
        steps=progress.step,
        epochs=progress.epoch,
        test_accuracy=metrics["accuracy"],
        test_loss=metrics["loss"],
    )
    return Result(path, metrics, progress.step, progress.epoch, wall, train_seconds, ips)


class _Progress(keras.callbacks.Callback):
    """Counts steps, stops at the planned step, reports progress, and writes history.csv and
    the TensorBoard scalars (train/ and validation/ under logs/)."""

    def __init__(
        self,
        cfg: Config,
        bundle: Any,
        total_steps: int,
        epochs: int,
        path: Path,
        reporter: Reporter,
    ) -> None:
        super().__init__()
        self.cfg, self.total_steps, self.epochs, self.reporter = cfg, total_steps, epochs, reporter
        self.batch_size, self.num_train = cfg.data.batch_size, bundle.num_train
        self.steps_per_epoch = bundle.steps_per_epoch
        self.step = self.epoch = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.history_path = path / "history.csv"
        self.writers = {
            split: tf.summary.create_file_writer(str(path / "logs" / split))
            for split in ("train", "validation")
        }
        self._window = (0, 0.0)  # (step, time) at the last report
        self._epoch_start = 0.0
        self._last_log = 0

    def _images_at(self, step: int) -> int:
        """Training images consumed after `step` steps (only an epoch's last batch is short)."""
        full, part = divmod(step, self.steps_per_epoch)
        return full * self.num_train + part * self.batch_size

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()
        if epoch == 0:
            self._window = (self.step, self._epoch_start)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step = self.epoch * self.steps_per_epoch + batch + 1
        if self.step >= self.total_steps:
            self.model.stop_training = True
        if self.step - self._last_log >= self.cfg.train.log_every or self.step >= self.total_steps:
            self._last_log = self.step
            now = time.perf_counter()
            images = self._images_at(self.step) - self._images_at(self._window[0])
            ips = images / max(now - self._window[1], 1e-9)
            self._window = (self.step, now)
            lr = optim.learning_rate_at(self.model.optimizer, self.step)
            entry = {
                "step": self.step,
                "total_steps": self.total_steps,
                "epoch": self.epoch + 1,
                "epochs": self.epochs,
                "loss": float(logs["loss"]),
                "accuracy": float(logs["accuracy"]),
                "learning_rate": lr,
                "images_per_second": ips,
            }
            self.reporter.update(entry)
            with self.writers["train"].as_default(step=self.step):
                tf.summary.scalar("batch_loss", entry["loss"])
                tf.summary.scalar("learning_rate", lr)
                tf.summary.scalar("images_per_second", ips)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        seconds = time.perf_counter() - self._epoch_start
        self.train_seconds += seconds
        images = self._images_at(self.step) - self._images_at(self.epoch * self.steps_per_epoch)
        self.images_seen += images
        self.epoch = epoch + 1
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "loss": float(logs.get("loss", math.nan)),
            "accuracy": float(logs.get("accuracy", math.nan)),
            "val_loss": float(logs.get("val_loss", math.nan)),
            "val_accuracy": float(logs.get("val_accuracy", math.nan)),
            "learning_rate": optim.learning_rate_at(self.model.optimizer, self.step),
            "seconds": round(seconds, 3),
            "images_per_second": round(images / max(seconds, 1e-9), 1),
        }
        new = not self.history_path.exists()
        with self.history_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
        with self.writers["train"].as_default(step=self.step):
            tf.summary.scalar("loss", row["loss"])
            tf.summary.scalar("accuracy", row["accuracy"])
            tf.summary.scalar("epoch_seconds", seconds)
        if "val_loss" in logs:
            with self.writers["validation"].as_default(step=self.step):
                tf.summary.scalar("loss", row["val_loss"])
                tf.summary.scalar("accuracy", row["val_accuracy"])
        for w in self.writers.values():
            w.flush()
        self.reporter.epoch_end(row | {"epochs": self.epochs})

    def log_test(self, metrics: dict[str, Any]) -> None:
        writer = tf.summary.create_file_writer(str(self.history_path.parent / "logs" / "test"))
        with writer.as_default(step=self.step):
            tf.summary.scalar("accuracy", metrics["accuracy"])
            tf.summary.scalar("loss", metrics["loss"])
        writer.close()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _save_model(model: keras.Model, path: Path) -> None:
    """Save atomically: Keras writes a temporary file that is then renamed into place."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _versions() -> dict[str, str]:
    return {
        "dlintro": dlintro.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }
