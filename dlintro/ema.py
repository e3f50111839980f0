"""`train.ema`: an exponential moving average of the model's weights (or lookahead), updated
inside the compiled training step, used for validation, the test metrics and the saved model.

The average covers every floating-point model variable: the trainable weights and batch
norm's moving statistics (as timm's ModelEmaV2 and airbench's lookahead average the whole
state), not integer states such as dropout's seed. It starts as the initial weights. Every
`every` optimizer steps (counted by the optimizer's iterations, so a resumed run updates at
the same steps):

    average = d * average + (1 - d) * weights

(computed as average + (1 - d) * (weights - average), PyTorch's lerp, so that the average of
a weight equal to it, such as a frozen one, stays exactly equal)
with d = decay, or min(decay, (1 + n) / (10 + n)) after n updates (`warmup: ramp`), or
decay * (step / total_steps)^3 (`warmup: cubic`). `mode: lookahead` then copies the average
into the weights (the optimizer's slots are kept), so training continues from it.

Evaluation sees the average: `swapped()` puts it in the model for the time of a validation
(and of what is kept of it: the trainer saves model_best.keras inside the same swap);
`finish()` puts it there for good once training ends (lookahead's last copy), before
model.keras, the test metrics and the weights' fingerprint. Checkpoints hold the average and
the update count (`variables`), so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlintro.errors import UserError


class WeightAverage:
    """The moving average of one model's floating-point variables (see the module doc)."""

    def __init__(self, cfg: Any, model: keras.Model, total_steps: int) -> None:
        self.cfg, self.total_steps = cfg, max(int(total_steps), 1)
        self.weights = [v for v in model.variables if _floating(v)]
        # Keras variables (checkpoints record their paths); under a strategy every replica
        # holds the same average, so the first replica's update is the value.
        self.average = [
            keras.Variable(
                v.numpy(), trainable=False, name=f"ema_{i}", aggregation="only_first_replica"
            )
            for i, v in enumerate(self.weights)
        ]
        self.updates = keras.Variable(
            0, dtype="int64", trainable=False, name="ema_updates",
            aggregation="only_first_replica",
        )  # fmt: skip
        self.swapped_in = False  # the average is in the model for a while (swapped)

    @property
    def variables(self) -> list[keras.Variable]:
        """What a checkpoint saves: the average, then the update count."""
        return [*self.average, self.updates]

    def decay_at(self, updates: Any, step: Any) -> Any:
        """The float32 decay of the update after `updates` updates, at optimizer step `step`."""
        decay = tf.constant(self.cfg.decay, tf.float32)
        if self.cfg.warmup == "ramp":
            n = tf.cast(updates, tf.float32)
            return tf.minimum(decay, (1.0 + n) / (10.0 + n))
        if self.cfg.warmup == "cubic":
            t = tf.minimum(tf.cast(step, tf.float32) / self.total_steps, 1.0)
            return decay * t**3
        return decay

    def update(self, step: Any) -> None:
        """In the compiled step, after the optimizer's update; `step` is its iterations."""

        def apply() -> tf.Tensor:
            d = self.decay_at(self.updates, step)
            for avg, w in zip(self.average, self.weights, strict=True):
                # d avg + (1 - d) w as a lerp: an unchanged (frozen) weight's average stays
                # exactly equal to it, where d avg + (1 - d) avg can round off by an ulp
                avg.assign(avg + (1.0 - d) * (tf.cast(w, avg.dtype) - avg))
                if self.cfg.mode == "lookahead":
                    w.assign(tf.cast(avg, w.dtype))
            self.updates.assign_add(1)
            return tf.constant(True)

        due = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.cfg.every), 0)
        tf.cond(due, apply, lambda: tf.constant(False))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The average in the model for the duration (validation); the weights back after.
        Re-entrant: inside a swap, a nested one changes nothing."""
        if self.swapped_in:
            yield
            return
        kept = [v.numpy() for v in self.weights]
        self.finish()
        self.swapped_in = True
        try:
            yield
        finally:
            self.swapped_in = False
            for w, value in zip(self.weights, kept, strict=True):
                w.assign(value)

    def finish(self) -> None:
        """Put the average in the model (for good: training is over)."""
        for w, avg in zip(self.weights, self.average, strict=True):
            w.assign(avg.numpy().astype(np.dtype(w.dtype)))


def _floating(v: Any) -> bool:
    return np.dtype(keras.backend.standardize_dtype(v.dtype)).kind == "f"


def build(
    cfg: Any, model: keras.Model, total_steps: int, distributed: bool = False
) -> WeightAverage | None:
    """The configured average (train.ema), or None. Lookahead writes the model's weights from
    inside the step, which needs one device."""
    if cfg is None:
        return None
    if distributed and cfg.mode == "lookahead":
        raise UserError(
            "train.ema.mode lookahead runs on one device; use mode: average under a strategy"
        )
    return WeightAverage(cfg, model, total_steps)
