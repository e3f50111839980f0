"""Config sections of the training techniques: optimizer variable groups (`optimizer.groups`),
the weight average (`train.ema`) and evaluation (`eval`). Plain pydantic, no TensorFlow;
dlintro.config puts them in the schema (strict, frozen, every error with its file:line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


def _regex(pattern: str) -> str:
    """A valid Python regular expression, or a one-line error that says why not."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc})") from None
    return pattern


class VariableGroup(BaseModel):
    """The trainable variables whose path ("layer/variable", e.g. "block1_bn1/beta") matches
    `match` (a regular expression, searched anywhere in the path; the first matching group
    wins): their learning rate is the schedule's times `lr_multiplier`, and their decoupled
    weight decay `weight_decay` (default: the optimizer's own) in place of the optimizer's.
    `until_epoch` N: they train during the first N epochs only and are frozen after (no update,
    no decay; airbench's whitening bias, 3 epochs). See dlintro.optim.apply_groups."""

    model_config = STRICT

    match: Annotated[str, Field(min_length=1), AfterValidator(_regex)]
    lr_multiplier: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    until_epoch: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


Groups = Annotated[Sequence[VariableGroup], AfterValidator(tuple)]


class EmaConfig(BaseModel):
    """An exponential moving average of the model's weights (dlintro.ema), used for
    validation, the test metrics and the saved model.

    Every `every` optimizer steps: average = d * average + (1 - d) * weights, where d is
    `decay`, or with `warmup: ramp` min(decay, (1 + n) / (10 + n)) after n earlier updates
    (tf.train.ExponentialMovingAverage's num_updates), or with `warmup: cubic`
    decay * (step / total_steps)^3 (airbench's lookahead). `mode: lookahead` also copies the
    average back into the weights after each update (Zhang et al. 2019's lookahead, as
    airbench does it)."""

    model_config = STRICT

    decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    every: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    warmup: Literal["none", "ramp", "cubic"] = "none"
    mode: Literal["average", "lookahead"] = "average"


TTA = Literal["none", "flip", "flip_translate"]


class EvalConfig(BaseModel):
    """How the final model is evaluated: `tta` test-time augmentation (dlintro.tta), used by
    the test metrics of training, `dlintro eval` and its report, `dlintro predict`, and
    export's artifact and its parity reference alike. Validation during training is plain."""

    model_config = STRICT

    tta: TTA = "none"
