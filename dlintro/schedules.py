"""Learning-rate schedules: a registry of small builders.

A schedule builder takes the base rate from `optimizer.learning_rate`, the total number of
training steps and the steps per epoch, plus its own parameters, and returns a float or a Keras
LearningRateSchedule (registered serializable, so a saved model loads back).

Schedules with state that depends on metrics (reduce_on_plateau) have `on_epoch_end(metrics)`
and `get_state()` / `set_state(state)`; the training loop calls the first after validation and
saves the state in every checkpoint, so that a resumed run continues exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import keras
from keras import ops
from pydantic import Field

from dlintro.registry import Registry, validated

SCHEDULES: Registry[Any] = Registry(
    "schedule", supplied=("learning_rate", "total_steps", "steps_per_epoch")
)

Rate = Any  # float | keras.optimizers.schedules.LearningRateSchedule
NonNegative = Annotated[float, Field(ge=0.0)]


@keras.saving.register_keras_serializable(package="dlintro")
class OffsetExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = min_lr + peak_lr * exp(-step / decay_steps), the published MNIST decay."""

    def __init__(self, peak_lr: float, min_lr: float, decay_steps: float) -> None:
        self.peak_lr, self.min_lr, self.decay_steps = peak_lr, min_lr, decay_steps

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        return self.min_lr + self.peak_lr * ops.exp(-step / self.decay_steps)

    def get_config(self) -> dict[str, Any]:
        return {"peak_lr": self.peak_lr, "min_lr": self.min_lr, "decay_steps": self.decay_steps}


@keras.saving.register_keras_serializable(package="dlintro")
class PiecewiseFactor(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * factors[i], where i counts the boundaries already passed."""

    def __init__(self, base_lr: float, boundaries: list[int], factors: list[float]) -> None:
        self.base_lr, self.boundaries, self.factors = base_lr, list(boundaries), list(factors)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        passed = (
            sum(ops.cast(step >= b, "int32") for b in self.boundaries) if self.boundaries else 0
        )
        return self.base_lr * ops.take(ops.convert_to_tensor(self.factors, "float32"), passed)

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "boundaries": self.boundaries, "factors": self.factors}


@keras.saving.register_keras_serializable(package="dlintro")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The 1cycle policy (Smith & Topin 2018) with PyTorch OneCycleLR's step convention.

    initial = max_lr / div_factor, final = initial / final_div_factor (PyTorch's min_lr), and
    peak = pct_start * total_steps - 1. Steps 0..peak rise from initial to max_lr (linearly, or
    along a half cosine with warmup="cosine", PyTorch's default anneal_strategy); steps
    peak..total_steps-1 fall along a half cosine from max_lr to final. The last training step
    (total_steps - 1) uses exactly `final`; later steps stay there.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        warmup: str = "linear",
    ) -> None:
        self.max_lr, self.total_steps, self.pct_start = max_lr, total_steps, pct_start
        self.div_factor, self.final_div_factor, self.warmup = div_factor, final_div_factor, warmup

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        end = float(max(self.total_steps - 1, 0))
        peak = min(max(self.pct_start * self.total_steps - 1.0, 0.0), end)
        up = ops.clip(step / max(peak, 1e-12), 0.0, 1.0)
        down = ops.clip((step - peak) / (end - peak if end > peak else 1.0), 0.0, 1.0)
        if self.warmup == "cosine":
            rise = self.max_lr + (initial - self.max_lr) / 2.0 * (ops.cos(math.pi * up) + 1.0)
        else:
            rise = initial + (self.max_lr - initial) * up
        fall = final + (self.max_lr - final) / 2.0 * (ops.cos(math.pi * down) + 1.0)
        return ops.where(step < peak, rise, fall)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
            "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
            "warmup": self.warmup,
        }  # fmt: skip


@keras.saving.register_keras_serializable(package="dlintro")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr x the factor interpolated linearly between (steps[i], factors[i]);
    before the first point the first factor, after the last point the last one."""

    def __init__(self, base_lr: float, steps: list[float], factors: list[float]) -> None:
        self.base_lr, self.steps, self.factors = base_lr, list(steps), list(factors)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        factor = ops.convert_to_tensor(self.factors[0], "float32")
        points = list(zip(self.steps, self.factors, strict=True))
        for (s0, f0), (s1, f1) in itertools.pairwise(points):
            t = ops.clip((step - s0) / max(s1 - s0, 1e-12), 0.0, 1.0)
            factor = ops.where(step >= s0, f0 + (f1 - f0) * t, factor)
        return self.base_lr * factor

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "steps": self.steps, "factors": self.factors}


@keras.saving.register_keras_serializable(package="dlintro")
class ReduceOnPlateau(keras.optimizers.schedules.LearningRateSchedule):
    """lr = base_lr x multiplier; the multiplier drops by `factor` after `patience` epochs in a
    row without improvement of the monitored metric (Keras ReduceLROnPlateau, mode "min").

    An epoch improves when `metrics[monitor] < best - min_delta`; the first epoch always does.
    After `patience` epochs without improvement the rate becomes max(lr x factor, min_lr) and
    the count starts again. The multiplier is a non-trainable variable that the compiled train
    step reads; `best` and the count are plain numbers. All three are in get_state().
    """

    def __init__(
        self,
        base_lr: float,
        factor: float = 0.1,
        patience: int = 10,
        min_lr: float = 0.0,
        monitor: str = "val_loss",
        min_delta: float = 1e-4,
    ) -> None:
        self.base_lr, self.factor, self.patience = base_lr, factor, patience
        self.min_lr, self.monitor, self.min_delta = min_lr, monitor, min_delta
        self.multiplier = keras.Variable(
            1.0, dtype="float32", trainable=False, name="plateau_multiplier"
        )
        self.best, self.wait = math.inf, 0

    def __call__(self, step: Any) -> Any:
        return self.base_lr * ops.convert_to_tensor(self.multiplier)

    def on_epoch_end(self, metrics: dict[str, float]) -> None:
        """Update from the epoch's metrics (keys: loss, accuracy, val_loss, val_accuracy)."""
        if self.monitor not in metrics:
            raise ValueError(
                f"reduce_on_plateau monitors '{self.monitor}', which this run does not compute "
                f"(it has: {', '.join(sorted(metrics))})"
            )
        value = float(metrics[self.monitor])
        if value < self.best - self.min_delta:  # NaN never improves
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            lr = self.base_lr * float(self.multiplier.numpy())
            if lr > self.min_lr:
                self.multiplier.assign(max(lr * self.factor, self.min_lr) / self.base_lr)

    def get_state(self) -> dict[str, Any]:
        """The json-able state that a checkpoint keeps (float32 multiplier exactly)."""
        return {"multiplier": float(self.multiplier.numpy()), "best": self.best, "wait": self.wait}

    def set_state(self, state: dict[str, Any]) -> None:
        self.multiplier.assign(float(state["multiplier"]))
        self.best, self.wait = float(state["best"]), int(state["wait"])

    def get_config(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr, "factor": self.factor, "patience": self.patience,
            "min_lr": self.min_lr, "monitor": self.monitor, "min_delta": self.min_delta,
        }  # fmt: skip


@SCHEDULES.register("constant", description="optimizer.learning_rate throughout")
@validated
def constant(learning_rate: float, total_steps: int, steps_per_epoch: int) -> Rate:
    return learning_rate


@SCHEDULES.register(
    "exponential_decay", description="min_lr + learning_rate * exp(-step / decay_steps)"
)
@validated
def exponential_decay(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    decay_steps: Annotated[float, Field(gt=0.0)],
    min_lr: NonNegative = 0.0,
) -> Rate:
    """The decay of the published MNIST recipes: from min_lr + learning_rate down to min_lr."""
    return OffsetExponentialDecay(learning_rate, min_lr, decay_steps)


@SCHEDULES.register(
    "piecewise_constant", description="learning_rate x factors[i] between boundaries"
)
@validated
def piecewise_constant(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    boundaries: Sequence[Annotated[int, Field(ge=1)]],
    factors: Sequence[NonNegative],
    unit: Literal["step", "epoch"] = "step",
) -> Rate:
    """Step decay (the ResNet recipe): boundaries in steps or epochs, one more factor than them."""
    if len(factors) != len(boundaries) + 1:
        raise ValueError(
            f"piecewise_constant needs one more factor than boundaries. Received: "
            f"{len(boundaries)} boundaries, {len(factors)} factors"
        )
    if list(boundaries) != sorted(set(boundaries)):
        raise ValueError(f"boundaries must increase. Received: {list(boundaries)}")
    scale = steps_per_epoch if unit == "epoch" else 1
    return PiecewiseFactor(learning_rate, [b * scale for b in boundaries], list(factors))


@SCHEDULES.register("cosine", description="linear warmup, then cosine decay to alpha x lr")
@validated
def cosine(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: Annotated[int, Field(ge=0)] = 0,
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
) -> Rate:
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps must be below the total steps. Received: {warmup_steps} >= {total_steps}"
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=alpha,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


@SCHEDULES.register(
    "one_cycle", description="1cycle: warm up to learning_rate, cosine down (Smith, PyTorch)"
)
@validated
def one_cycle(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3,
    div_factor: Annotated[float, Field(ge=1.0)] = 25.0,
    final_div_factor: Annotated[float, Field(ge=1.0)] = 1e4,
    warmup: Literal["linear", "cosine"] = "linear",
) -> Rate:
    """learning_rate is the peak; start learning_rate / div_factor, end that / final_div_factor.

    The defaults are PyTorch OneCycleLR's (pct_start 0.3, div_factor 25, final_div_factor 1e4,
    so the last step uses learning_rate / 2.5e5); PyTorch also warms up along a cosine
    (warmup: cosine), the default here is a linear warmup. See OneCycle.
    """
    return OneCycle(learning_rate, total_steps, pct_start, div_factor, final_div_factor, warmup)


@SCHEDULES.register(
    "piecewise_linear", description="learning_rate x factors, linear between points (triangular)"
)
@validated
def piecewise_linear(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    at: Sequence[NonNegative],
    factors: Sequence[NonNegative],
    unit: Literal["fraction", "epoch", "step"] = "fraction",
) -> Rate:
    """The rate is learning_rate x factors[i] at point at[i] and linear in between: a
    triangular (warm-up, warm-down) or any piecewise linear shape. `at` is in fractions of
    the run (unit fraction: 0 is the first step, 1 the step after the last), epochs or steps,
    increasing. Airbench94: at [0, 0.23, 1], factors [0.2, 1.0, 0.07]."""
    if len(at) != len(factors) or not at:
        raise ValueError(
            f"piecewise_linear needs as many factors as points. Received: {len(at)} points, "
            f"{len(factors)} factors"
        )
    if any(b <= a for a, b in itertools.pairwise(at)):
        raise ValueError(f"points (at) must increase. Received: {list(at)}")
    scale = {"fraction": total_steps, "epoch": steps_per_epoch, "step": 1}[unit]
    return PiecewiseLinear(learning_rate, [float(a) * scale for a in at], list(factors))


@SCHEDULES.register(
    "reduce_on_plateau", description="learning_rate x factor after `patience` flat epochs"
)
@validated
def reduce_on_plateau(
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1,
    patience: Annotated[int, Field(ge=1)] = 10,
    min_lr: NonNegative = 0.0,
    monitor: Literal["val_loss", "loss"] = "val_loss",
    min_delta: NonNegative = 1e-4,
) -> Rate:
    """Divide the rate when the monitored loss stops improving, checked at each epoch end.

    val_loss needs a validation set (data.validation_split > 0); loss is the epoch's mean
    training loss (as trained: with label smoothing, mixing and train.l2). See ReduceOnPlateau.
    """
    return ReduceOnPlateau(learning_rate, factor, patience, min_lr, monitor, min_delta)
