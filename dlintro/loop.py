"""The compiled training step: forward, loss, gradients, update, running metrics.

Kept apart from train.py (which decides when to log, validate, checkpoint and stop) so that the
hot path is small and readable. `run_steps` executes up to N steps in one TensorFlow call and
stops early at the first non-finite loss, leaving that step's update unapplied.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


class StepRunner:
    """Runs training steps for one model and optimizer and keeps the epoch's running metrics."""

    def __init__(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer, jit_compile: bool
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.correct = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.seen = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.bad_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        optimizer.build(model.trainable_variables)
        self._step = tf.function(self._train_step, jit_compile=jit_compile)
        self._run = tf.function(self._run_steps)
        self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def _train_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probs))
            if model.losses:
                loss += tf.add_n(model.losses)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        finite = tf.math.is_finite(loss)
        grads = tape.gradient(scaled, model.trainable_variables)

        def apply() -> tf.Tensor:
            optimizer.apply(grads, model.trainable_variables)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), tf.float64))
        return loss, correct

    def _run_steps(self, iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        done = tf.constant(0, tf.int64)
        for _ in tf.range(steps):
            x, y = next(iterator)
            loss, correct = self._step(x, y)
            if not tf.math.is_finite(loss):
                self.bad_loss.assign(loss)
                break
            n = tf.cast(tf.shape(y)[0], tf.float64)
            self.loss_sum.assign_add(tf.cast(loss, tf.float64) * n)
            self.correct.assign_add(correct)
            self.seen.assign_add(n)
            done += 1
        return done

    def run_steps(self, iterator: Any, steps: int) -> int:
        """Run up to `steps` steps; fewer only when a loss was NaN or infinite (see bad_loss)."""
        return int(self._run(iterator, tf.constant(steps, tf.int64)))

    def reset_metrics(self) -> None:
        for v in (self.loss_sum, self.correct, self.seen):
            v.assign(0.0)

    def metrics(self) -> dict[str, float]:
        seen = max(float(self.seen.numpy()), 1.0)
        return {
            "loss": float(self.loss_sum.numpy()) / seen,
            "accuracy": float(self.correct.numpy()) / seen,
        }

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        """Mean loss and accuracy over a finite dataset (validation)."""
        loss_sum = correct = seen = 0.0
        for x, y in dataset:
            probs = self._predict(x).numpy().astype(np.float64)
            labels = y.numpy()
            picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
            loss_sum += float(-np.log(picked).sum())
            correct += float((probs.argmax(axis=1) == labels).sum())
            seen += len(labels)
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
