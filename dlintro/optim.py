"""Optimizers and learning-rate schedules, each a registry of small builders.

An optimizer builder takes the learning rate (a float or a schedule) plus its own parameters.
A schedule builder takes the base rate from `optimizer.learning_rate`, the total number of
training steps and the steps per epoch, plus its own parameters, and returns a float or a
Keras LearningRateSchedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import keras
from keras import ops
from pydantic import Field

from dlintro.registry import Registry, validated

OPTIMIZERS: Registry[Any] = Registry("optimizer")
SCHEDULES: Registry[Any] = Registry("schedule")

# Arguments dlintro supplies; never set in a config's `params`.
SUPPLIED = ("learning_rate", "total_steps", "steps_per_epoch")

Rate = Any  # float | keras.optimizers.schedules.LearningRateSchedule
Unit = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Epsilon = Annotated[float, Field(gt=0.0, le=1.0)]
Clip = Annotated[float, Field(gt=0.0)] | None


# ----------------------------------------------------------------------------- optimizers


@OPTIMIZERS.register("sgd", description="gradient descent, optional (Nesterov) momentum")
@validated
def sgd(
    learning_rate: Rate,
    momentum: Unit = 0.0,
    nesterov: bool = False,
    weight_decay: NonNegative | None = None,
    global_clipnorm: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        global_clipnorm=global_clipnorm,
    )  # fmt: skip


@OPTIMIZERS.register("adam", description="Adam (Kingma & Ba)")
@validated
def adam(
    learning_rate: Rate,
    beta_1: Unit = 0.9,
    beta_2: Unit = 0.999,
    epsilon: Epsilon = 1e-7,
    amsgrad: bool = False,
    global_clipnorm: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
        global_clipnorm=global_clipnorm,
    )  # fmt: skip


@OPTIMIZERS.register("adamw", description="Adam with decoupled weight decay")
@validated
def adamw(
    learning_rate: Rate,
    weight_decay: NonNegative = 0.004,
    beta_1: Unit = 0.9,
    beta_2: Unit = 0.999,
    epsilon: Epsilon = 1e-7,
    global_clipnorm: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.AdamW(
        learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
        global_clipnorm=global_clipnorm,
    )  # fmt: skip


@OPTIMIZERS.register("rmsprop", description="RMSprop (Hinton)")
@validated
def rmsprop(
    learning_rate: Rate,
    rho: Unit = 0.9,
    momentum: Unit = 0.0,
    epsilon: Epsilon = 1e-7,
    centered: bool = False,
    global_clipnorm: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered,
        global_clipnorm=global_clipnorm,
    )  # fmt: skip


@OPTIMIZERS.register("adadelta", description="Adadelta (Zeiler); Keras 2 used learning_rate 1.0")
@validated
def adadelta(
    learning_rate: Rate, rho: Unit = 0.95, epsilon: Epsilon = 1e-7, global_clipnorm: Clip = None
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adadelta(
        learning_rate, rho=rho, epsilon=epsilon, global_clipnorm=global_clipnorm
    )


@OPTIMIZERS.register("adagrad", description="Adagrad (Duchi et al.)")
@validated
def adagrad(
    learning_rate: Rate,
    initial_accumulator_value: NonNegative = 0.1,
    epsilon: Epsilon = 1e-7,
    global_clipnorm: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adagrad(
        learning_rate, initial_accumulator_value=initial_accumulator_value, epsilon=epsilon,
        global_clipnorm=global_clipnorm,
    )  # fmt: skip


# ----------------------------------------------------------------------------- schedules


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


def build(
    optimizer_cfg: Any, schedule_cfg: Any, total_steps: int, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
    """The configured optimizer driven by the configured schedule."""
    lr = SCHEDULES.get(schedule_cfg.name)(
        optimizer_cfg.learning_rate, total_steps, steps_per_epoch, **schedule_cfg.params
    )
    return OPTIMIZERS.get(optimizer_cfg.name)(lr, **optimizer_cfg.params)


def learning_rate_at(optimizer: keras.optimizers.Optimizer, step: int | None = None) -> float:
    """The learning rate the optimizer uses at `step` (default: its current step)."""
    lr = optimizer._learning_rate  # the schedule itself, when there is one
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        s = int(optimizer.iterations.numpy()) if step is None else step
        return float(ops.convert_to_numpy(lr(s)))
    return float(ops.convert_to_numpy(optimizer.learning_rate))
