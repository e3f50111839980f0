"""Training progress: the Reporter protocol the CLI implements, and the Recorder that feeds it
and writes history.csv and the TensorBoard scalars of a run (logs/train, validation, test)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Protocol

import tensorflow as tf

from dlintro import optim, runs
from dlintro.config import Config


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


class Recorder:
    """Progress for the reporter, history.csv, and TensorBoard scalars (logs/train, validation)."""

    def __init__(
        self,
        cfg: Config,
        bundle: Any,
        total_steps: int,
        epochs: int,
        path: Path,
        reporter: Reporter,
        start_step: int,
    ) -> None:
        self.cfg, self.total_steps, self.epochs, self.reporter = cfg, total_steps, epochs, reporter
        self.batch_size, self.num_train = cfg.data.batch_size, bundle.num_train
        self.steps_per_epoch = bundle.steps_per_epoch
        self.step = start_step
        self.images_seen = 0
        self.train_seconds = self.session_seconds = 0.0
        self.history_path = path / "history.csv"
        self._keep_history_until(start_step)
        self.writers = {
            split: tf.summary.create_file_writer(str(path / "logs" / split))
            for split in ("train", "validation")
        }
        self._window: tuple[int, float] = (start_step, 0.0)
        self._epoch = (start_step, 0.0)  # (first step, seconds) of the current epoch
        self._last_log = start_step

    def _keep_history_until(self, step: int) -> None:
        """On resume, drop history rows written after the checkpoint being resumed."""
        if not self.history_path.exists():
            return
        with self.history_path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        if not rows:
            self.history_path.unlink()
            return
        lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows]
        runs.write_text(self.history_path, "\n".join(lines) + "\n")

    def _images(self, first: int, last: int) -> int:
        """Training images consumed by steps first+1..last (an epoch's last batch is short)."""

        def upto(step: int) -> int:
            full, part = divmod(step, self.steps_per_epoch)
            return full * self.num_train + part * self.batch_size

        return upto(last) - upto(first)

    def epoch_start(self) -> None:
        self._epoch = (self.step, 0.0)

    def add_time(self, seconds: float, first: int, last: int) -> None:
        self.train_seconds += seconds
        self.session_seconds += seconds
        self.images_seen += self._images(first, last)
        self._epoch = (self._epoch[0], self._epoch[1] + seconds)
        self._window = (self._window[0], self._window[1] + seconds)

    def step_end(self, step: int, logs: dict[str, float], optimizer: Any) -> None:
        self.step = step
        if step - self._last_log < self.cfg.train.log_every and step < self.total_steps:
            return
        self._last_log = step
        ips = self._images(self._window[0], step) / max(self._window[1], 1e-9)
        self._window = (step, 0.0)
        lr = optim.learning_rate_at(optimizer, step)
        entry = {
            "step": step, "total_steps": self.total_steps,
            "epoch": (step - 1) // self.steps_per_epoch + 1, "epochs": self.epochs,
            "loss": logs["loss"], "accuracy": logs["accuracy"], "learning_rate": lr,
            "images_per_second": ips,
        }  # fmt: skip
        self.reporter.update(entry)
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("batch_loss", entry["loss"])
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_second", ips)

    def epoch_end(
        self, step: int, logs: dict[str, float], val: dict[str, float] | None, optimizer: Any
    ) -> None:
        first, seconds = self._epoch
        row = {
            "epoch": (step - 1) // self.steps_per_epoch + 1,
            "step": step,
            "loss": logs["loss"],
            "accuracy": logs["accuracy"],
            "val_loss": val["loss"] if val else math.nan,
            "val_accuracy": val["accuracy"] if val else math.nan,
            "learning_rate": optim.learning_rate_at(optimizer, step),
            "seconds": round(seconds, 3),
            "images_per_second": round(self._images(first, step) / max(seconds, 1e-9), 1),
        }
        new = not self.history_path.exists()
        with self.history_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("loss", row["loss"])
            tf.summary.scalar("accuracy", row["accuracy"])
            tf.summary.scalar("epoch_seconds", seconds)
        if val:
            with self.writers["validation"].as_default(step=step):
                tf.summary.scalar("loss", val["loss"])
                tf.summary.scalar("accuracy", val["accuracy"])
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
