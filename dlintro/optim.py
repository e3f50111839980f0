"""Optimizers and learning-rate schedules, each a registry of small builders.

An optimizer builder takes the learning rate (a float or a schedule) plus its own parameters.
A schedule builder takes the base rate from `optimizer.learning_rate`, the total number of
training steps and the steps per epoch, plus its own parameters, and returns a float or a
Keras LearningRateSchedule.

Gradient clipping: every optimizer takes at most one of `global_clipnorm` (rescale all
gradients together so that their joint L2 norm is at most the value), `clipnorm` (the same, per
variable) and `clipvalue` (clip each element to [-value, value]); Keras applies it to the
(unscaled) gradients before weight decay and the update.

Weight decay: `sgd.weight_decay` and `adamw.weight_decay` are Keras 3's *decoupled* decay.
Before each update Keras does `w -= lr_t * weight_decay * w` (lr_t: the scheduled rate of that
step) on every trainable variable, biases and batch-norm gamma/beta included, outside the
gradient, so it never enters SGD's momentum or Adam's moments. Classic L2 regularization added
to the loss (kernels only) is `train.l2` instead (see dlintro.loop).

Schedules with state that depends on metrics (reduce_on_plateau) have `on_epoch_end(metrics)`
and `get_state()` / `set_state(state)`; the training loop calls the first after validation and
saves the state in every checkpoint, so that a resumed run continues exactly.
"""

from __future__ import annotations

import math
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


def _clipping(global_clipnorm: float | None, clipnorm: float | None, clipvalue: float | None):
    """The Keras clipping arguments; at most one kind of clipping may be set."""
    given = {
        "global_clipnorm": global_clipnorm, "clipnorm": clipnorm, "clipvalue": clipvalue
    }  # fmt: skip
    chosen = [k for k, v in given.items() if v is not None]
    if len(chosen) > 1:
        raise ValueError(f"set at most one of {', '.join(given)}. Received: {', '.join(chosen)}")
    return given


# ----------------------------------------------------------------------------- optimizers


@OPTIMIZERS.register("sgd", description="gradient descent, optional (Nesterov) momentum")
@validated
def sgd(
    learning_rate: Rate,
    momentum: Unit = 0.0,
    nesterov: bool = False,
    weight_decay: NonNegative | None = None,
    global_clipnorm: Clip = None,
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    """SGD; `weight_decay` is decoupled (Keras 3): each step first `w -= lr_t * wd * w` on every
    trainable variable (biases, batch-norm gamma/beta included), outside the momentum buffer.

    Without momentum that equals classic L2 with gradient `wd * w`, i.e. `train.l2: wd` (but on
    all variables, not only kernels); with momentum the two differ: the ResNet paper's "weight
    decay 1e-4" with momentum 0.9 is `train.l2: 1.0e-4`, not this parameter.
    """
    return keras.optimizers.SGD(
        learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
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
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
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
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    """AdamW (Loshchilov & Hutter): each step first `w -= lr_t * weight_decay * w` on every
    trainable variable, outside the Adam moments; lr_t is the full scheduled rate (as in Keras
    and PyTorch), so the decay follows the schedule.
    """
    return keras.optimizers.AdamW(
        learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
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
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
    )  # fmt: skip


@OPTIMIZERS.register("adadelta", description="Adadelta (Zeiler); Keras 2 used learning_rate 1.0")
@validated
def adadelta(
    learning_rate: Rate,
    rho: Unit = 0.95,
    epsilon: Epsilon = 1e-7,
    global_clipnorm: Clip = None,
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adadelta(
        learning_rate, rho=rho, epsilon=epsilon, **_clipping(global_clipnorm, clipnorm, clipvalue)
    )


@OPTIMIZERS.register("adagrad", description="Adagrad (Duchi et al.)")
@validated
def adagrad(
    learning_rate: Rate,
    initial_accumulator_value: NonNegative = 0.1,
    epsilon: Epsilon = 1e-7,
    global_clipnorm: Clip = None,
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adagrad(
        learning_rate, initial_accumulator_value=initial_accumulator_value, epsilon=epsilon,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
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


def build(
    optimizer_cfg: Any, schedule_cfg: Any, total_steps: int, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
    """The configured optimizer driven by the configured schedule."""
    lr = SCHEDULES.get(schedule_cfg.name)(
        optimizer_cfg.learning_rate, total_steps, steps_per_epoch, **schedule_cfg.params
    )
    return OPTIMIZERS.get(optimizer_cfg.name)(lr, **optimizer_cfg.params)


def schedule_of(optimizer: keras.optimizers.Optimizer) -> Any:
    """The optimizer's schedule (or its learning rate), seen through a LossScaleOptimizer."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner._learning_rate  # the schedule itself, when there is one


def learning_rate_at(optimizer: keras.optimizers.Optimizer, step: int | None = None) -> float:
    """The learning rate the optimizer uses at `step` (default: its current step)."""
    lr = schedule_of(optimizer)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        s = int(optimizer.iterations.numpy()) if step is None else step
        return float(ops.convert_to_numpy(lr(s)))
    return float(ops.convert_to_numpy(optimizer.learning_rate))
