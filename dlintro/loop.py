"""The compiled training step: forward, loss, gradients, update, running metrics.

Kept apart from train.py (which decides when to log, validate, checkpoint and stop) so that the
hot path is small and readable. `run_steps` executes up to N steps in one TensorFlow call and
stops early at the first non-finite loss, leaving that step's update unapplied.

The training loss, per batch:

    mean over the batch of  -sum_k q_k log p_k          (cross-entropy, p = the model's softmax)
    + 0.3 x the same for each auxiliary output         (GoogLeNet's aux heads, if any)
    + the model's own losses (layer regularizers)
    + 0.5 * l2 * sum of w^2 over every kernel          (train.l2)

Targets q: integer labels [B] give q = one_hot(y) (the faster sparse path when there is no
smoothing); soft labels [B, C] (mixup / cutmix) are used as given. Label smoothing e
(train.label_smoothing) replaces q by (1 - e) q + e / C (Szegedy et al. 2016, as Keras and
PyTorch do: the e is spread over all C classes, the true one included).

The L2 term follows Caffe and the ResNet paper: its gradient is l2 * w, so "weight decay
1e-4" there is `train.l2: 1.0e-4` here (Keras' L2 regularizer, l2 * sum w^2, has gradient
2 * l2 * w). Kernels are the variables named *kernel (Dense, Conv); biases, batch-norm gamma and
beta and other weights are not decayed.

With `train.ema` the step also updates the weights' moving average after the optimizer's
update (dlintro.ema); validation then sees the average (`evaluated()`, also around keeping the
best model), and `finish()` puts it in the model when training ends. Its variables go in
every checkpoint (`optimizer.checkpoint_groups`).

Running accuracy counts argmax(p) == y for integer labels and argmax(p) == argmax(q) for soft
labels (the larger share of a mixed image; its first class on a tie). Validation (`evaluate`)
always uses integer labels and plain, unsmoothed cross-entropy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from dlintro import ema as ema_mod
from dlintro.models.batchnorm import fused

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers (Szegedy et al. 2014)


def split_outputs(outputs: Any) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """(main probabilities, auxiliary ones) of a model's output: one tensor or [main, aux...]."""
    if isinstance(outputs, (list, tuple)):
        return outputs[0], list(outputs[1:])
    return outputs, []


class StepRunner:
    """Runs training steps for one model and optimizer and keeps the epoch's running metrics."""

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        jit_compile: bool,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        prepare: Callable[[tf.Tensor], tf.Tensor] | None = None,
        replicas: int = 1,
        global_batch: int = 0,
        ema: Any = None,
        total_steps: int = 1,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        # Batch norm trains on TensorFlow's fused kernel, except under XLA where it is slower
        # (dlintro.models.batchnorm); DistributedStepRunner sets it for its own XLA choice.
        self.fused_batch_norm = not jit_compile
        # Under a strategy (DistributedStepRunner): the replica count and the global batch
        # that each replica's loss is a share of; 1 and 0 (no share) on one device.
        self.replicas, self.global_batch = replicas, global_batch
        # Turns the stream's images (uint8, or augmented float32 on 0..255) into the model's
        # normalized float32 inside the compiled step, where XLA can fuse it (DataBundle.prepare).
        self.prepare = prepare or (lambda x: x)
        self.label_smoothing, self.l2 = float(label_smoothing), float(l2)
        self.kernels = [v for v in model.trainable_variables if v.name.endswith("kernel")]
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.correct = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.seen = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.bad_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        optimizer.build(model.trainable_variables)
        # train.ema: the weights' moving average, updated in the step (dlintro.ema).
        self.ema = ema_mod.build(ema, model, total_steps, distributed=replicas > 1)
        optimizer.checkpoint_groups = self.checkpoint_groups()  # dlintro.checkpoint saves them
        # Wrapped in partials: TensorFlow counts traces per code object, so the several runners
        # of one process (auto's probe, then training) would warn of "retracing" where each
        # traced once; a partial gives each runner its own count, which still warns of its own.
        self._step = tf.function(functools.partial(self._train_step), jit_compile=jit_compile)
        self._run = tf.function(functools.partial(self._run_steps))
        # With XLA the whole chunk of steps is one compiled loop (see run_rows).
        self._rows = tf.function(functools.partial(self._run_rows), jit_compile=jit_compile)
        self._predict = tf.function(
            lambda x: split_outputs(model(x, training=False))[0], reduce_retracing=True
        )

    def data_loss(self, y: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
        """Mean cross-entropy of the batch against integer [B] or soft [B, C] labels, smoothed."""
        if y.shape.rank == 1 and not self.label_smoothing:
            return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probs))
        num_classes = probs.shape[-1]
        if y.shape.rank == 1:
            q = tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=probs.dtype)
        else:
            q = tf.cast(y, probs.dtype)
        if self.label_smoothing:
            q = q * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return tf.reduce_mean(keras.losses.categorical_crossentropy(q, probs))

    def outputs_loss(self, y: tf.Tensor, outputs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """(main probabilities, their data loss + 0.3 x each auxiliary output's data loss)."""
        probs, aux = split_outputs(outputs)
        loss = self.data_loss(y, probs)
        for a in aux:
            loss += AUX_LOSS_WEIGHT * self.data_loss(y, a)
        return probs, loss

    def l2_penalty(self) -> tf.Tensor:
        """0.5 * l2 * (sum of squared kernel weights): gradient l2 * w (see the module doc)."""
        squares = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.kernels]
        return 0.5 * self.l2 * tf.add_n(squares)

    def _loss_and_gradients(self, x: tf.Tensor, y: tf.Tensor) -> tuple[Any, Any, Any]:
        """(loss, correct count, gradients) of one batch: the whole batch on one device, a
        replica's slice under a strategy. A replica's data loss is its examples' share of the
        global batch's mean and the global terms (layer losses, L2) are split over the
        replicas, so that the gradients summed across replicas equal one device's on the
        whole batch (on one device both factors are 1)."""
        model, optimizer = self.model, self.optimizer
        x = self.prepare(x)
        with tf.GradientTape() as tape:
            with fused(self.fused_batch_norm):
                outputs = model(x, training=True)
            probs, loss = self.outputs_loss(y, outputs)
            if self.global_batch:
                loss = loss * tf.cast(tf.shape(x)[0], tf.float32) / self.global_batch
            if model.losses:
                loss += tf.add_n(model.losses) / self.replicas
            if self.l2 and self.kernels:
                loss += tf.cast(self.l2_penalty(), loss.dtype) / self.replicas
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
        truth = tf.cast(y, tf.int32) if y.shape.rank == 1 else tf.argmax(y, -1, tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, truth), tf.float64))
        return loss, correct, grads

    def _train_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[Any, Any, Any]:
        """One step on one device: (loss, correct, examples); a non-finite loss applies no
        update."""
        loss, correct, grads = self._loss_and_gradients(x, y)

        def apply() -> tf.Tensor:
            self.optimizer.apply(grads, self.model.trainable_variables)
            if self.ema is not None:
                self.ema.update(self.optimizer.iterations)
            return tf.constant(True)

        tf.cond(tf.math.is_finite(loss), apply, lambda: tf.constant(False))
        return loss, correct, tf.cast(tf.shape(y)[0], tf.float64)

    def _iterator_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[Any, Any, Any]:
        """The step that run_steps takes on each batch of its iterator."""
        return self._step(x, y)

    def _steps(self, steps: tf.Tensor, batch: Callable[[tf.Tensor], Any], step: Any) -> tf.Tensor:
        """Up to `steps` steps of `step` (-> loss, correct, examples) on batch(i), adding to the
        running sums; stops at a non-finite loss (kept in bad_loss). Returns the steps done."""
        done = tf.constant(0, tf.int64)
        for i in tf.range(steps):
            x, y = batch(i)
            loss, correct, n = step(x, y)
            if not tf.math.is_finite(loss):
                self.bad_loss.assign(loss)
                break
            self.loss_sum.assign_add(tf.cast(loss, tf.float64) * n)
            self.correct.assign_add(correct)
            self.seen.assign_add(n)
            done += 1
        return done

    def _run_steps(self, iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        return self._steps(steps, lambda _: next(iterator), self._iterator_step)

    def _run_rows(
        self, xs: tf.Tensor, ys: tf.Tensor, first: tf.Tensor, steps: tf.Tensor
    ) -> tf.Tensor:
        # gather, not xs[first + i]: XLA takes a slice's bounds as compile-time constants and
        # would compile the loop again for every `first`. The step is inlined: one loop.
        def row(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return tf.gather(xs, first + i), tf.gather(ys, first + i)

        return self._steps(steps, row, self._train_step)

    def run_steps(self, iterator: Any, steps: int) -> int:
        """Run up to `steps` steps; fewer only when a loss was NaN or infinite (see bad_loss)."""
        return int(self._run(iterator, tf.constant(steps, tf.int64)))

    def run_rows(self, xs: tf.Tensor, ys: tf.Tensor, first: int, steps: int) -> int:
        """Like run_steps, on batches first, first + 1, ... of xs and ys (an epoch's batches
        stacked: [S, B, ...] and [S, B]; see DataBundle.train_rows). No tf.data iterator per
        step: softmax's 0.2 ms step took almost twice as long with one (README, Performance)."""
        return int(self._rows(xs, ys, tf.constant(first, tf.int32), tf.constant(steps, tf.int32)))

    def any_worker(self, flag: bool) -> bool:
        """`flag` on any worker of the run: one process here, so `flag` itself."""
        return flag

    def reset_metrics(self) -> None:
        for v in (self.loss_sum, self.correct, self.seen):
            v.assign(0.0)

    def metric_state(self) -> list[float]:
        """The epoch's running sums (loss, correct, seen), for a checkpoint (exact as floats)."""
        return [float(v.numpy()) for v in (self.loss_sum, self.correct, self.seen)]

    def set_metric_state(self, values: list[float]) -> None:
        for v, value in zip((self.loss_sum, self.correct, self.seen), values, strict=True):
            v.assign(float(value))

    def metrics(self) -> dict[str, float]:
        seen = max(float(self.seen.numpy()), 1.0)
        return {
            "loss": float(self.loss_sum.numpy()) / seen,
            "accuracy": float(self.correct.numpy()) / seen,
        }

    def evaluated(self) -> contextlib.AbstractContextManager[None]:
        """The weights that validation measures in the model for the duration: train.ema's
        average (swapped in, the training weights back after), else the model's own. The
        trainer validates and keeps the best model (early_stop.Watch) inside one of these, so
        model_best.keras holds exactly the weights whose score it records."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext()

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        """Mean loss and accuracy over a finite dataset (validation), of `evaluated()`'s
        weights."""
        from dlintro import evaluate

        with self.evaluated():
            return evaluate.loss_and_accuracy(*evaluate.predict(self.model, dataset, self._predict))

    def checkpoint_groups(self) -> dict[str, list[Any]]:
        """Variables beyond the model's and the optimizer's that a checkpoint keeps."""
        return {"ema": self.ema.variables} if self.ema is not None else {}

    def finish(self) -> None:
        """Training is over: the model takes its final weights (train.ema's average)."""
        if self.ema is not None:
            self.ema.finish()


class DistributedStepRunner(StepRunner):
    """The same steps under a tf.distribute strategy: each replica computes its slice of the
    global batch (StepRunner._loss_and_gradients) and Keras' optimizer sums the gradients across
    replicas (an all-reduce). A non-finite loss is seen by every replica alike (the loss is
    reduced across them), so all stop at the same step.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        jit_compile: bool,
        strategy: tf.distribute.Strategy,
        global_batch: int,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        prepare: Callable[[tf.Tensor], tf.Tensor] | None = None,
        ema: Any = None,
        total_steps: int = 1,
    ) -> None:
        self.strategy = strategy
        super().__init__(
            model, optimizer, False, label_smoothing, l2, prepare,
            replicas=strategy.num_replicas_in_sync, global_batch=global_batch, ema=ema,
            total_steps=total_steps,
        )  # fmt: skip
        self.fused_batch_norm = not jit_compile
        self._grads = tf.function(self._loss_and_gradients, jit_compile=jit_compile)
        self._any = tf.function(self._any_worker)

    def _replica_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, correct, grads = self._grads(x, y)
        self.optimizer.apply(grads, self.model.trainable_variables)
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        return loss, correct

    def _iterator_step(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """One step on every replica: the global batch's reduced loss and correct count."""
        loss, correct = self.strategy.run(self._replica_step, args=(x, y))
        total = tf.distribute.ReduceOp.SUM
        return (
            self.strategy.reduce(total, loss, axis=None),
            self.strategy.reduce(total, correct, axis=None),
            tf.constant(float(self.global_batch), tf.float64),
        )

    def any_worker(self, flag: bool) -> bool:
        """True when `flag` is set on any worker (so that all of them stop at the same step on
        a signal that reached only some); also a barrier, as every worker must take part."""
        return float(self._any(tf.constant(float(flag)))) > 0

    def _any_worker(self, flag: tf.Tensor) -> tf.Tensor:
        per_replica = self.strategy.run(lambda: tf.identity(flag))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
