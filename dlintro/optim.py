"""Optimizers (a registry of small builders) and `build`, which joins one to its schedule.

An optimizer builder takes the learning rate (a float or a schedule from dlintro.schedules) plus
its own parameters.

Gradient clipping: every optimizer takes at most one of `global_clipnorm` (rescale all
gradients together so that their joint L2 norm is at most the value), `clipnorm` (the same, per
variable) and `clipvalue` (clip each element to [-value, value]); Keras applies it to the
(unscaled) gradients before weight decay and the update.

Weight decay: `sgd.weight_decay` and `adamw.weight_decay` are Keras 3's *decoupled* decay.
Before each update Keras does `w -= lr_t * weight_decay * w` (lr_t: the scheduled rate of that
step) on every trainable variable, biases and batch-norm gamma/beta included, outside the
gradient, so it never enters SGD's momentum or Adam's moments. Classic L2 regularization added
to the loss (kernels only) is `train.l2` instead (see dlintro.loop).

Variable groups (`optimizer.groups`, apply_groups): the variables whose path matches a group
get lr_t x lr_multiplier and their own decoupled weight decay (still lr_t x weight_decay), and
with `until_epoch` stop training after that many epochs.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

import keras
from keras import ops
from pydantic import Field

from dlintro.errors import UserError
from dlintro.registry import ParamsError, Registry, validated
from dlintro.schedules import SCHEDULES, Rate

# Arguments dlintro supplies to optimizers and schedules; never set in a config's `params`.
SUPPLIED = SCHEDULES.supplied  # learning_rate, total_steps, steps_per_epoch

OPTIMIZERS: Registry[Any] = Registry("optimizer", supplied=("learning_rate",))

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
    trainable variable (biases, batch-norm gamma/beta included), outside the momentum buffer;
    lr_t is the scheduled rate of that step, so the decay follows the schedule.

    The update (Keras): v = momentum * v - lr_t * g, then w += v, or with `nesterov`
    w += momentum * v - lr_t * g. With a constant rate that is PyTorch's SGD (buffer
    b = momentum * b + g, w -= lr * (g + momentum * b) for Nesterov), v = -lr * b.
    Per-variable-group rates and decays: config `optimizer.groups` (apply_groups).

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


@OPTIMIZERS.register("adamax", description="Adamax: Adam with the infinity norm (Kingma & Ba)")
@validated
def adamax(
    learning_rate: Rate,
    beta_1: Unit = 0.9,
    beta_2: Unit = 0.999,
    epsilon: Epsilon = 1e-7,
    global_clipnorm: Clip = None,
    clipnorm: Clip = None,
    clipvalue: Clip = None,
) -> keras.optimizers.Optimizer:
    """Adamax (section 7 of the Adam paper): u = max(beta_2 u, |g|) in place of Adam's second
    moment; the optimizer of RStudio's Keras CIFAR-10 example (configs/cifar10_keras_conv)."""
    return keras.optimizers.Adamax(
        learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
        **_clipping(global_clipnorm, clipnorm, clipvalue),
    )  # fmt: skip


def build(
    optimizer_cfg: Any, schedule_cfg: Any, total_steps: int, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
    """The configured optimizer driven by the configured schedule.

    Bad params, or a builder refusing them, are one ParamsError "optimizer/schedule: ...".
    """
    try:
        lr = SCHEDULES.create(
            schedule_cfg.name,
            optimizer_cfg.learning_rate,
            total_steps,
            steps_per_epoch,
            **schedule_cfg.params,
        )
        optimizer = OPTIMIZERS.create(optimizer_cfg.name, lr, **optimizer_cfg.params)
    except ParamsError as exc:
        raise ParamsError(f"optimizer/schedule: {exc.detail}", exc.errors) from None
    return apply_groups(optimizer, getattr(optimizer_cfg, "groups", ()), steps_per_epoch)


# ----------------------------------------------------------------------------- variable groups


class _Grouped:
    """Mixed into an optimizer's class by `apply_groups`: per-variable learning-rate factors,
    weight decays and last training steps, fixed when the optimizer is built on the model's
    variables."""

    variable_groups: tuple[Any, ...] = ()
    steps_per_epoch: int = 1

    def build(self, variables: list[Any]) -> None:
        super().build(variables)  # type: ignore[misc]
        chosen = [group_of(v.path, self.variable_groups) for v in variables]
        for i, group in enumerate(self.variable_groups):
            if i not in chosen:
                examples = ", ".join(v.path for v in variables[:4])
                raise UserError(
                    f"optimizer.groups[{i}].match '{group.match}' matches none of the model's "
                    f"trainable variables (their paths look like: {examples})"
                )
        groups = [None if c is None else self.variable_groups[c] for c in chosen]
        self.lr_factors = [1.0 if g is None else float(g.lr_multiplier) for g in groups]
        self.decays = [
            self.weight_decay if g is None or g.weight_decay is None else g.weight_decay
            for g in groups
        ]
        # until_epoch N: the group trains in optimizer steps 0 .. N x steps_per_epoch - 1
        self.until_steps = [
            None if g is None or g.until_epoch is None else g.until_epoch * self.steps_per_epoch
            for g in groups
        ]

    def trains(self, until: int) -> Any:
        """True (a boolean tensor) while the step being applied is before step `until`: the
        optimizer's iterations (restored by a resume) count the steps applied so far."""
        return ops.less(self.iterations, until)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        i = self._get_variable_index(variable)
        factor, until = self.lr_factors[i], self.until_steps[i]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        update = super().update_step  # type: ignore[misc]
        if until is None:
            update(gradient, variable, learning_rate)
        else:  # after `until`: no update at all (momentum and moments keep their values)
            ops.cond(
                self.trains(until), lambda: update(gradient, variable, learning_rate), lambda: None
            )

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        """Keras' decoupled decay `w -= lr_t * wd * w`, run once per distinct wd and last step
        (Keras reads self.weight_decay while tracing; it is put back afterwards). A group past
        its until_epoch decays by wd x 0: `w - 0`, exactly w."""
        by_decay: dict[tuple[float, int | None], list[Any]] = {}
        for v in variables:
            i = self._get_variable_index(v)
            if self.decays[i]:
                by_decay.setdefault((float(self.decays[i]), self.until_steps[i]), []).append(v)
        own = self.weight_decay
        try:
            for (wd, until), group in by_decay.items():
                on = None if until is None else ops.cast(self.trains(until), "float32")
                self.weight_decay = wd if on is None else ops.multiply(wd, on)
                super()._apply_weight_decay(group)  # type: ignore[misc]
        finally:
            self.weight_decay = own


@functools.cache
def _grouped_class(base: type) -> type:
    return type(f"Grouped{base.__name__}", (_Grouped, base), {})


def group_of(path: str, groups: tuple[Any, ...]) -> int | None:
    """The index of the first group whose `match` is found in `path`, or None."""
    return next((i for i, g in enumerate(groups) if re.search(g.match, path)), None)


def apply_groups(
    optimizer: keras.optimizers.Optimizer, groups: tuple[Any, ...], steps_per_epoch: int = 1
) -> keras.optimizers.Optimizer:
    """Give variable groups (config `optimizer.groups`) their own rate, weight decay and
    training length.

    For the variables of a group (the first whose `match` is found in the variable's path):
    every update uses learning rate lr_t x lr_multiplier (lr_t: the schedule's rate at that
    step) in place of lr_t, whatever the optimizer (momentum and Adam moments included), and
    the decoupled weight decay is `w -= lr_t x weight_decay x w` with the group's weight
    decay (unset: the optimizer's own), lr_t *not* multiplied: airbench's "bias_scaler 64"
    raises the batch-norm offsets' rate but not their decay.

    A group with `until_epoch` N trains during the first N epochs (N x `steps_per_epoch`
    optimizer steps, counted by the optimizer's iterations, which a resume restores: it freezes
    at the same step) and is frozen after, as airbench freezes its whitening bias with
    PyTorch's `requires_grad = False`: no update (SGD's momentum and Adam's moments keep their
    values) and no weight decay, decided inside the compiled step (a cond on the iterations),
    so the values stay exactly equal. Its gradient is still computed (and counted by
    global_clipnorm), and train.ema's lookahead still copies the group's average into it, as
    airbench's lookahead does.

    A group that matches no variable is an error when the optimizer is built. No groups: the
    optimizer is returned unchanged.
    Groups mix their behaviour into this optimizer object (its class becomes a subclass of
    its own), so checkpoints, schedules and loss scaling see the same optimizer.
    """
    if not groups:
        return optimizer
    optimizer.__class__ = _grouped_class(type(optimizer))
    optimizer.variable_groups = tuple(groups)
    optimizer.steps_per_epoch = max(int(steps_per_epoch), 1)
    return optimizer


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
