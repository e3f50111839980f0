"""Training progress: the Reporter protocol the CLI implements, and the Recorder that feeds it
events (dlintro.events), writes the run's history.csv and drives its TensorBoard logs
(dlintro.board.writer), keeping the training time and speed of the run.

history.csv has one row per epoch: epoch, step, loss, accuracy, val_loss, val_accuracy (empty
without a validation split), learning_rate, seconds, images_per_second. A resumed run drops the
rows written after the checkpoint it resumes from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from dlintro import optim, runs
from dlintro.board.writer import BoardWriter
from dlintro.config import Config
from dlintro.events import EpochEnd, RunStart, StepProgress


class Reporter(Protocol):
    """Where training progress goes (a rich progress bar, plain lines, or nowhere)."""

    def start(self, plan: RunStart) -> None: ...
    def update(self, logs: StepProgress) -> None: ...
    def epoch_end(self, logs: EpochEnd) -> None: ...
    def end(self) -> None: ...


class SilentReporter:
    """A reporter that shows nothing (library use and tests)."""

    def start(self, plan: RunStart) -> None:
        pass

    def update(self, logs: StepProgress) -> None:
        pass

    def epoch_end(self, logs: EpochEnd) -> None:
        pass

    def end(self) -> None:
        pass


class Recorder:
    """Progress events for the reporter, history.csv, and the TensorBoard logs of a run."""

    def __init__(
        self,
        cfg: Config,
        bundle: Any,
        total_steps: int,
        epochs: int,
        path: Path,
        reporter: Reporter,
        start_step: int,
        model: Any = None,
        loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    ) -> None:
        self.cfg, self.total_steps, self.epochs, self.reporter = cfg, total_steps, epochs, reporter
        self.batch_size, self.num_train = cfg.data.batch_size, bundle.num_train
        self.steps_per_epoch = bundle.steps_per_epoch
        self.step = start_step
        self.images_seen = 0
        self.train_seconds = self.session_seconds = 0.0
        # After this process's first call (which traces and compiles): steady-state speed.
        self.steady_images, self.steady_seconds, self._calls = 0, 0.0, 0
        self.path = path
        runs.keep_history_until(path, start_step)
        self._window: tuple[int, float] = (start_step, 0.0)
        self._epoch = (start_step, 0.0)  # (first step, seconds) of the current epoch
        self._last_log = start_step
        self.board = BoardWriter(
            cfg, bundle, path / "logs", total_steps, epochs, start_step, model, loss_fn
        )

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
        self._calls += 1
        if self._calls > 1:
            self.steady_images += self._images(first, last)
            self.steady_seconds += seconds
        self._epoch = (self._epoch[0], self._epoch[1] + seconds)
        self._window = (self._window[0], self._window[1] + seconds)

    def step_end(self, step: int, logs: dict[str, float], optimizer: Any) -> None:
        self.step = step
        self.board.profile(step)
        # On multiples of log_every (the first chunk end at or past one), not log_every after
        # the last line: an epoch end or a resume between them would shift every later line.
        every = self.cfg.train.log_every
        if step // every == self._last_log // every and step < self.total_steps:
            return
        self._last_log = step
        ips = self._images(self._window[0], step) / max(self._window[1], 1e-9)
        self._window = (step, 0.0)
        event = StepProgress(
            step=step, total_steps=self.total_steps,
            epoch=(step - 1) // self.steps_per_epoch + 1, epochs=self.epochs,
            loss=logs["loss"], accuracy=logs["accuracy"],
            learning_rate=optim.learning_rate_at(optimizer, step), images_per_second=ips,
        )  # fmt: skip
        self.reporter.update(event)
        self.board.progress(event)

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
        runs.append_history(self.path, row)
        event = EpochEnd(**row, epochs=self.epochs)
        self.board.epoch_end(event, seconds, val)
        self.reporter.epoch_end(event)

    def log_test(
        self,
        metrics: dict[str, Any],
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """The test scalars; with the predictions also the confusion matrix and misclassified
        images (tensorboard.images)."""
        self.board.test(self.step, metrics, probs, labels)

    def close(self) -> None:
        self.board.close()
