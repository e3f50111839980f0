"""Training progress: the Reporter protocol the CLI implements, and the Recorder that feeds it
and writes history.csv and the TensorBoard logs of a run.

    logs/                  hparams (the run's settings and, from the runs below, its results)
    logs/train/            scalars: loss, accuracy, learning rate, images/s, epoch time
    logs/validation/       scalars: loss and accuracy per epoch
    logs/test/             scalars: the final accuracy and loss
    logs/model/            everything else: histograms weights/* and gradients/* (every N
                           epochs); text config and model_summary; the model graph; images
                           augmented_samples (the first batch, as the model gets it) and, at
                           the end, confusion_matrix and misclassified (test set)
    logs/plugins/profile/  a profiler trace of tensorboard.profile_steps, when set

The split directories hold scalars only, so that each reads back as plain numbers.

Gradient histograms come from one extra forward and backward pass on a fixed training batch (the
first batch of the run) at the histogram epochs, outside the compiled step, with the model's
non-trainable state (batch-norm statistics, dropout seeds) restored afterwards: training is not
slowed down or changed by them.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
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
    """Progress for the reporter, history.csv, and the TensorBoard logs (see the module doc)."""

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
        self.history_path = path / "history.csv"
        self._keep_history_until(start_step)
        # No validation split, no (empty) validation run in TensorBoard.
        splits = ["train"] + (["validation"] if getattr(bundle, "validation", None) else [])
        self.writers = {
            split: tf.summary.create_file_writer(str(path / "logs" / split)) for split in splits
        }
        self._window: tuple[int, float] = (start_step, 0.0)
        self._epoch = (start_step, 0.0)  # (first step, seconds) of the current epoch
        self._last_log = start_step
        # TensorBoard beyond scalars: needs the model (and loss_fn for gradient histograms).
        self.model, self.loss_fn, self.bundle = model, loss_fn, bundle
        self.logdir, self.run_name = path / "logs", path.name
        self._sample: tuple[tf.Tensor, tf.Tensor] | None = None
        self._profiling = self._profile_done = False
        if model is not None:
            self.writers["model"] = tf.summary.create_file_writer(str(self.logdir / "model"))
            self._session_start(start_step)
        self._profile(start_step)

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
        self._calls += 1
        if self._calls > 1:
            self.steady_images += self._images(first, last)
            self.steady_seconds += seconds
        self._epoch = (self._epoch[0], self._epoch[1] + seconds)
        self._window = (self._window[0], self._window[1] + seconds)

    def step_end(self, step: int, logs: dict[str, float], optimizer: Any) -> None:
        self.step = step
        self._profile(step)
        # On multiples of log_every (the first chunk end at or past one), not log_every after
        # the last line: an epoch end or a resume between them would shift every later line.
        every = self.cfg.train.log_every
        if step // every == self._last_log // every and step < self.total_steps:
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
        every = self.cfg.tensorboard.histogram_every_epochs
        if (
            self.model is not None
            and every
            and (row["epoch"] % every == 0 or step >= self.total_steps)
        ):
            self._safely("histograms", self._histograms, step)
        for w in self.writers.values():
            w.flush()
        self.reporter.epoch_end(row | {"epochs": self.epochs})

    def log_test(
        self,
        metrics: dict[str, Any],
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """The test scalars; with the predictions also the confusion matrix and misclassified
        images (tensorboard.images)."""
        writer = tf.summary.create_file_writer(str(self.logdir / "test"))
        with writer.as_default(step=self.step):
            tf.summary.scalar("accuracy", metrics["accuracy"])
            tf.summary.scalar("loss", metrics["loss"])
        writer.close()
        images = self.cfg.tensorboard.images and probs is not None and labels is not None
        if images and "model" in self.writers:
            with self.writers["model"].as_default(step=self.step):
                self._safely("test images", self._test_images, metrics, probs, labels)

    def close(self) -> None:
        self._stop_profiler()
        for w in self.writers.values():
            w.close()

    # ----------------------------------------------------------------------- TensorBoard extras

    def _safely(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a TensorBoard extra; a failure is a warning, never the end of a training run."""
        try:
            fn(*args)
        except Exception as exc:  # any failure here must not stop training
            msg = " ".join(str(exc).split())[:300]
            text = f"TensorBoard {what} not written: {type(exc).__name__}: {msg}"
            warnings.warn(text, RuntimeWarning, stacklevel=2)

    def _session_start(self, step: int) -> None:
        """What a process writes when it starts training: the settings (each session: a
        resumed run may have changed them), and at step 0 the model and the first batch."""
        self._safely("hparams", self._hparams)
        with self.writers["model"].as_default(step=step):
            self._safely("config text", self._config_text)
            if step == 0:
                self._safely("model summary", self._model_text)
                self._safely("graph", self._graph)
                if self.cfg.tensorboard.images:
                    self._safely("training images", self._train_images)
        if step == 0 and self.cfg.tensorboard.histogram_every_epochs:
            self._safely("histograms", self._histograms, 0)
        self.writers["model"].flush()

    def _hparams(self) -> None:
        from tensorboard.plugins.hparams import api as hp

        from dlintro.board import hparams_of

        values = hparams_of(self.cfg, self.total_steps, self.epochs)
        writer = tf.summary.create_file_writer(str(self.logdir))
        with writer.as_default(step=0):
            hp.hparams(values, trial_id=self.run_name, start_time_secs=int(time.time()))
        writer.close()

    def _config_text(self) -> None:
        tf.summary.text(
            "config", _code(self.cfg.to_yaml()), description="The resolved config of this run."
        )

    def _model_text(self) -> None:
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=100)
        tf.summary.text("model_summary", _code("\n".join(lines)))

    def _graph(self) -> None:
        shape = [None, *self.bundle.info.input_shape]
        forward = tf.function(lambda x: self.model(x, training=False))
        tf.summary.graph(forward.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph)

    def _batch(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The first training batch of the run (augmented as in training), kept for reuse."""
        if self._sample is None:
            self._sample = self.bundle.first_batch()
        return self._sample

    def _train_images(self) -> None:
        from dlintro import report
        from dlintro.data.preview import tile

        x, _ = self._batch()
        images = report.displayable(report.denormalize(x.numpy()[:64], self.bundle.normalization))
        cols = min(8, len(images))
        grid = tile(images, math.ceil(len(images) / cols), cols)
        about = "The first training batch after augmentation, de-normalized: what the model gets."
        tf.summary.image("augmented_samples", grid[None], step=0, description=about)

    def _histograms(self, step: int) -> None:
        model = self.model
        with self.writers["model"].as_default(step=step):
            for v in model.weights:
                if "float" in str(v.dtype) and "seed_generator" not in v.path:
                    tf.summary.histogram(f"weights/{v.path}", v.value)
            if self.loss_fn is None or _distributed(model):  # one batch, eager: one device only
                return
            x, y = self._batch()
            saved = [tf.identity(v.value) for v in model.non_trainable_variables]
            try:
                with tf.GradientTape() as tape:
                    probs = model(x, training=True)
                    loss = self.loss_fn(y, probs)
                    if model.losses:
                        loss += tf.cast(tf.add_n(model.losses), loss.dtype)
                grads = tape.gradient(loss, model.trainable_variables)
            finally:
                for v, value in zip(model.non_trainable_variables, saved, strict=True):
                    v.assign(value)
            for v, g in zip(model.trainable_variables, grads, strict=True):
                if g is not None:
                    tf.summary.histogram(f"gradients/{v.path}", g)

    def _test_images(self, metrics: dict[str, Any], probs: np.ndarray, labels: np.ndarray) -> None:
        from dlintro import report

        names = list(metrics["class_names"])
        confusion = np.asarray(metrics["confusion_matrix"])
        matrix = _decode(report.confusion_png(confusion, names))
        tf.summary.image(
            "confusion_matrix", matrix, description="Rows: true class; columns: predicted."
        )
        worst = report.worst_misclassified(probs, labels, report.GALLERY_SIZE)
        if not len(worst):
            return
        x = report.gather(self.bundle.test, worst)
        images = report.displayable(report.denormalize(x, self.bundle.normalization))
        titles = [
            report.caption(names, labels[i], probs[i].argmax(), probs[i].max()) for i in worst
        ]
        about = (
            "The misclassified test images with the lowest probability for their true class: "
            "true and predicted label, probability of the prediction."
        )
        tf.summary.image(
            "misclassified", _decode(report.gallery_png(images, titles)), description=about
        )

    def _profile(self, step: int) -> None:
        """Trace global steps start+1..stop (tensorboard.profile_steps) into logs/."""
        window = self.cfg.tensorboard.profile_steps
        if window is None:
            return
        start, stop = window
        if not self._profiling and not self._profile_done and start <= step < stop:
            try:
                tf.profiler.experimental.start(str(self.logdir))
                self._profiling = True
            except Exception as exc:  # e.g. another profiler is running
                warnings.warn(f"profiler not started: {exc}", RuntimeWarning, stacklevel=2)
                self._profile_done = True
        elif self._profiling and step >= stop:
            self._stop_profiler()

    def _stop_profiler(self) -> None:
        if self._profiling:
            self._profiling, self._profile_done = False, True
            tf.profiler.experimental.stop()


def _distributed(model: Any) -> bool:
    """Whether the model's variables live under a tf.distribute strategy with several replicas."""
    variables = model.trainable_variables
    return bool(variables) and isinstance(
        getattr(variables[0], "value", None), tf.distribute.DistributedValues
    )


def _code(text: str) -> str:
    """Markdown that TensorBoard's text plugin shows verbatim (an indented block)."""
    return "\n".join("    " + line for line in text.splitlines())


def _decode(png: bytes) -> tf.Tensor:
    return tf.io.decode_png(png, channels=3)[None]
