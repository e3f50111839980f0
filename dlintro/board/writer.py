"""The TensorBoard logs of a training run (the Recorder in dlintro.record drives this writer).

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

The hparams of a run are one hparams session named after the run directory. No experiment
summary is written: TensorBoard then infers the hparams' domains from the runs it finds (and
shows first those whose values differ between runs), and takes as metrics the last values of the
scalars in logs/{train,validation,test}/, so a running run shows its latest numbers.

Gradient histograms come from one extra forward and backward pass on a fixed training batch (the
first batch of the run) at the histogram epochs, outside the compiled step, with the model's
non-trainable state (batch-norm statistics, dropout seeds) restored afterwards: training is not
slowed down or changed by them. Every extra beyond the scalars is written "safely": a failure is
a warning, never the end of a training run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dlintro import figures, scores
from dlintro.config import Config
from dlintro.data.normalization import invert
from dlintro.events import EpochEnd, StepProgress

# Settings that a caller adds to the hparams of the runs it trains in this process, by name
# (dlintro.sweep: a trial's searched keys, such as "schedule.params.decay_steps"). Empty: none.
EXTRA_HPARAMS: dict[str, bool | int | float | str] = {}


def hparams_of(cfg: Any, total_steps: int, epochs: int) -> dict[str, Any]:
    """The settings of a run that the hparams dashboard shows (from its resolved Config)."""
    return {
        **EXTRA_HPARAMS,
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "optimizer": cfg.optimizer.name,
        "learning_rate": float(cfg.optimizer.learning_rate),
        "schedule": cfg.schedule.name,
        "batch_size": int(cfg.data.batch_size),
        "epochs": int(epochs),
        "steps": int(total_steps),
        "seed": int(cfg.seed),
        "augment": ",".join(a.name for a in cfg.data.augment) or "none",
        "precision": cfg.train.precision,
        "label_smoothing": float(cfg.train.label_smoothing),
        "l2": float(cfg.train.l2),
    }


# `batch_loss` keeps its name (dashboards and dlintro.board.reader read it), but it is the mean
# training loss of the epoch so far at each log step, as the progress line shows it; the
# description says so in TensorBoard.
RUNNING_LOSS = (
    "Mean training loss of the epoch so far (label-smoothed when train.label_smoothing is set), "
    "every train.log_every steps; `loss` is the same at the epoch's end."
)


class BoardWriter:
    """Writes RUN/logs/ (see the module doc) for one training session of a run."""

    def __init__(
        self,
        cfg: Config,
        bundle: Any,
        logdir: Path,
        total_steps: int,
        epochs: int,
        start_step: int,
        model: Any = None,
        loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    ) -> None:
        self.cfg, self.bundle, self.total_steps, self.epochs = cfg, bundle, total_steps, epochs
        self.logdir, self.run_name = logdir, logdir.parent.name
        # No validation split, no (empty) validation run in TensorBoard.
        splits = ["train"] + (["validation"] if getattr(bundle, "validation", None) else [])
        self.writers = {
            split: tf.summary.create_file_writer(str(logdir / split)) for split in splits
        }
        # TensorBoard beyond scalars: needs the model (and loss_fn for gradient histograms).
        self.model, self.loss_fn = model, loss_fn
        self._sample: tuple[tf.Tensor, tf.Tensor] | None = None
        self._profiling = self._profile_done = False
        if model is not None:
            self.writers["model"] = tf.summary.create_file_writer(str(logdir / "model"))
            self._session_start(start_step)
        self.profile(start_step)

    def progress(self, event: StepProgress) -> None:
        """The scalars of a progress line: the epoch's running loss, learning rate, images/s."""
        with self.writers["train"].as_default(step=event.step):
            tf.summary.scalar("batch_loss", event.loss, description=RUNNING_LOSS)
            tf.summary.scalar("learning_rate", event.learning_rate)
            tf.summary.scalar("images_per_second", event.images_per_second)

    def epoch_end(self, row: EpochEnd, seconds: float, val: dict[str, float] | None) -> None:
        """The epoch's scalars (`seconds` unrounded), histograms when due; flush everything."""
        step = row.step
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("loss", row.loss)
            tf.summary.scalar("accuracy", row.accuracy)
            tf.summary.scalar("epoch_seconds", seconds)
        if val:
            with self.writers["validation"].as_default(step=step):
                tf.summary.scalar("loss", val["loss"])
                tf.summary.scalar("accuracy", val["accuracy"])
        every = self.cfg.tensorboard.histogram_every_epochs
        if (
            self.model is not None
            and every
            and (row.epoch % every == 0 or step >= self.total_steps)
        ):
            self._safely("histograms", self.histograms, step)
        for w in self.writers.values():
            w.flush()

    def test(
        self,
        step: int,
        metrics: dict[str, Any],
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """The test scalars; with the predictions also the confusion matrix and misclassified
        images (tensorboard.images)."""
        writer = tf.summary.create_file_writer(str(self.logdir / "test"))
        with writer.as_default(step=step):
            tf.summary.scalar("accuracy", metrics["accuracy"])
            tf.summary.scalar("loss", metrics["loss"])
        writer.close()
        images = self.cfg.tensorboard.images and probs is not None and labels is not None
        if images and "model" in self.writers:
            with self.writers["model"].as_default(step=step):
                self._safely("test images", self._test_images, metrics, probs, labels)

    def close(self) -> None:
        self._stop_profiler()
        for w in self.writers.values():
            w.close()

    def histograms(self, step: int) -> None:
        """Histograms of the weights and (one batch, one device) of their gradients."""
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

    def profile(self, step: int) -> None:
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

    # ----------------------------------------------------------------------- the extras

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
            self._safely("histograms", self.histograms, 0)
        self.writers["model"].flush()

    def _hparams(self) -> None:
        from tensorboard.plugins.hparams import api as hp

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
        x, _ = self._batch()
        grid = figures.batch_grid(x.numpy(), self.bundle.normalization)
        about = "The first training batch after augmentation, de-normalized: what the model gets."
        tf.summary.image("augmented_samples", grid[None], step=0, description=about)

    def _test_images(self, metrics: dict[str, Any], probs: np.ndarray, labels: np.ndarray) -> None:
        names = list(metrics["class_names"])
        confusion = np.asarray(metrics["confusion_matrix"])
        matrix = _decode(figures.confusion_png(confusion, names))
        tf.summary.image(
            "confusion_matrix", matrix, description="Rows: true class; columns: predicted."
        )
        worst = scores.worst_misclassified(probs, labels, figures.GALLERY_SIZE)
        if not len(worst):
            return
        x = figures.gather(self.bundle.test, worst)
        images = figures.displayable(invert(x, self.bundle.normalization))
        titles = [
            figures.caption(names, labels[i], probs[i].argmax(), probs[i].max()) for i in worst
        ]
        about = (
            "The misclassified test images with the lowest probability for their true class: "
            "true and predicted label, probability of the prediction."
        )
        tf.summary.image(
            "misclassified", _decode(figures.gallery_png(images, titles)), description=about
        )

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
