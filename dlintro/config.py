"""The experiment config: YAML file + `--set` overrides -> a typed, validated, frozen Config.

Every error names where the bad value came from (`file:line` or the `--set` argument), the key,
and what would be right. The final config is built in a fixed order (schema defaults, the YAML
file, then overrides), validated, frozen, and dumped next to every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dlintro import yamlfile
from dlintro.config_errors import format_value, schema_error
from dlintro.config_sections import EmaConfig, EvalConfig, Groups
from dlintro.errors import UserError
from dlintro.registry import ParamsError
from dlintro.yamlfile import KeyPath


class FrozenDict(dict):
    """A dict that refuses changes, so a validated config cannot be altered afterwards."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a dlintro config is frozen; use --set or model_copy to change it")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __ior__(self, other: Any) -> FrozenDict:  # type: ignore[override]
        self._refuse()
        return self


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


# Builder parameters: any YAML values, frozen after validation (the registry checks them).
Params = Annotated[dict[str, Any], AfterValidator(_freeze)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Spec(_Strict):
    """A registry name with the parameters for its builder."""

    name: str
    params: Params = Field(default_factory=dict)


class DataConfig(_Strict):
    """Which dataset, and how it is batched, split, normalized and augmented."""

    dataset: str = "mnist"
    params: Params = Field(default_factory=dict)
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    validation_split: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    normalize: Literal["unit", "standardize", "none"] = "unit"
    augment: Annotated[Sequence[Spec], AfterValidator(tuple)] = ()


class ModelConfig(_Strict):
    """A registered model builder and its parameters (see `dlintro models`)."""

    name: str
    params: Params = Field(default_factory=dict)


class OptimizerConfig(_Strict):
    """A registered optimizer; `learning_rate` is the base (peak) rate that schedules shape."""

    name: str = "adam"
    learning_rate: Annotated[float, Field(gt=0.0, le=100.0)] = 0.001
    params: Params = Field(default_factory=dict)
    groups: Groups = ()  # per-variable-group lr multipliers and weight decay (dlintro.optim)


class ScheduleConfig(_Strict):
    """A registered learning-rate schedule over training steps."""

    name: str = "constant"
    params: Params = Field(default_factory=dict)


# The validation metrics a run records, which early stopping and keep_best can follow.
ValMetric = Literal["val_accuracy", "val_loss"]


class EarlyStoppingConfig(_Strict):
    """Stop after `patience` validations (epoch ends) in a row in which `monitor` did not beat
    its best by more than `min_delta`: higher is better for accuracy, lower for loss."""

    monitor: ValMetric = "val_loss"
    patience: Annotated[int, Field(ge=1, le=100_000)] = 3
    min_delta: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0


class TrainConfig(_Strict):
    """How long and how to train. Exactly one of `epochs` and `steps` is set."""

    epochs: Annotated[int, Field(ge=1)] | None = None
    steps: Annotated[int, Field(ge=1)] | None = None
    # Execution settings, not recipe: `auto` measures them where the run happens (dlintro.tune).
    steps_per_execution: Literal["auto"] | Annotated[int, Field(ge=1, le=10_000)] = "auto"
    jit_compile: Literal["auto"] | bool = "auto"
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    log_every: Annotated[int, Field(ge=1)] = 100
    deterministic: bool = False
    # Cross-entropy against (1 - e) * one_hot + e / num_classes (see dlintro.loop).
    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0
    # Classic L2 on kernels added to the loss: 0.5 * l2 * sum(w^2), gradient l2 * w (Caffe and
    # the ResNet paper's "weight decay 1e-4" is l2: 1.0e-4). Not optimizer.params.weight_decay.
    l2: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    early_stopping: EarlyStoppingConfig | None = None  # dlintro.early_stop
    ema: EmaConfig | None = None  # a moving average of the weights (dlintro.ema)

    @pydantic.model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("set either train.epochs or train.steps, not both")
        return self


class CheckpointConfig(_Strict):
    """When to save what a resume needs; a crash loses at most one interval of work."""

    every_steps: Annotated[int, Field(ge=1)] | None = None
    every_minutes: Annotated[float, Field(gt=0.0)] | None = 10.0
    at_epoch_end: bool = True
    keep: Annotated[int, Field(ge=1, le=1000)] = 2
    # model_best.keras by `monitor` (else train.early_stopping.monitor, else val_loss).
    keep_best: bool = False
    monitor: ValMetric | None = None

    @pydantic.model_validator(mode="after")
    def _monitor_needs_keep_best(self) -> CheckpointConfig:
        if self.monitor is not None and not self.keep_best:
            raise ValueError("monitor is for keep_best: set keep_best: true or delete monitor")
        return self


class DistributionConfig(_Strict):
    """Where training runs, and what the batch size means when there are several replicas.

    `data.batch_size` is the global batch (`batch: global`, the default) or the batch of each
    replica (`batch: per_replica`, so the global batch grows with the replica count). With
    `lr_scaling` linear or sqrt, optimizer.learning_rate is multiplied by k or sqrt(k), where
    k = global batch / data.batch_size (so only per_replica batches are ever rescaled).
    """

    strategy: Literal["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"] = "auto"
    logical_cpus: Annotated[int, Field(ge=1, le=64)] | None = None
    batch: Literal["global", "per_replica"] = "global"
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"


class TensorBoardConfig(_Strict):
    """What a run's TensorBoard logs hold beyond the scalars (see README "Seeing the training").

    Histograms of weights and gradients every N epochs (0: none); images (augmented training
    samples, misclassified test images, the confusion matrix); a profiler trace of the global
    steps start+1..stop when `profile_steps: [start, stop]` is set.
    """

    histogram_every_epochs: Annotated[int, Field(ge=0)] = 1
    images: bool = True
    profile_steps: (
        Annotated[Sequence[Annotated[int, Field(ge=0)]], AfterValidator(tuple)] | None
    ) = None

    @pydantic.model_validator(mode="after")
    def _profile_range(self) -> TensorBoardConfig:
        p = self.profile_steps
        if p is not None and (len(p) != 2 or p[0] >= p[1]):
            raise ValueError(f"profile_steps {list(p)}: give [start, stop] with start < stop")
        return self


class Config(_Strict):
    """One experiment, exactly as it runs."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1))
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)
    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)  # test-time augmentation (dlintro.tta)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML; loading it back gives the same Config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------- validation


def _check_names(cfg: Config, positions: dict[KeyPath, str], src: str) -> None:
    """Check registry names and builder params (imports the registries, hence TensorFlow)."""
    from dlintro import models, optim, schedules
    from dlintro.data import AUGMENTATIONS, DATASETS

    checks: list[tuple[KeyPath, Any, str, Params]] = [
        (("data",), DATASETS, cfg.data.dataset, cfg.data.params),
        (("model",), models.MODELS, cfg.model.name, cfg.model.params),
        (("optimizer",), optim.OPTIMIZERS, cfg.optimizer.name, cfg.optimizer.params),
        (("schedule",), schedules.SCHEDULES, cfg.schedule.name, cfg.schedule.params),
    ]
    for i, aug in enumerate(cfg.data.augment):
        checks.append((("data", "augment", i), AUGMENTATIONS, aug.name, aug.params))
    for section, registry, name, params in checks:
        name_key: KeyPath = (*section, "dataset" if section == ("data",) else "name")
        try:
            registry.get(name)
        except UserError as exc:
            raise UserError(
                f"{yamlfile.where(positions, name_key, src)}: {yamlfile.dotted(name_key)}: {exc}"
            ) from None
        try:
            registry.check_params(name, params)  # the arguments dlintro supplies are skipped
        except ParamsError as exc:
            loc, msg, value = exc.errors[0]
            path = (*section, "params", *loc)
            where = yamlfile.where(positions, path, src)
            if msg.startswith(("unknown parameter", "missing required")):
                raise UserError(f"{where}: {yamlfile.dotted(path)}: {msg}") from None
            raise UserError(
                f"{where}: {yamlfile.dotted(path)} = {format_value(value)}: {msg}"
            ) from None


def best_monitor(cfg: Config) -> str:
    """The metric checkpoint.keep_best follows: checkpoint.monitor, else
    train.early_stopping.monitor, else val_loss (Keras' ModelCheckpoint default)."""
    es = cfg.train.early_stopping
    return cfg.checkpoint.monitor or (es.monitor if es is not None else "val_loss")


def _check_consistency(cfg: Config, positions: dict[KeyPath, str], src: str) -> None:
    """Rules that join sections, checked before anything is built: whatever monitors a
    validation metric (a schedule, train.early_stopping, checkpoint.keep_best) needs a
    validation split."""
    from dlintro import schedules

    monitor = cfg.schedule.params.get("monitor")
    if monitor is None:
        param = schedules.SCHEDULES.params(cfg.schedule.name).get("monitor")
        monitor = param.default if param is not None else ""
    # (section, what monitors, the metric, the other way out)
    watchers: list[tuple[KeyPath, str, str, str]] = [
        (("schedule",), f"schedule {cfg.schedule.name}", str(monitor),
         "schedule.params.monitor: loss"),
    ]  # fmt: skip
    if (es := cfg.train.early_stopping) is not None:
        watchers.append((("train", "early_stopping"), "train.early_stopping", es.monitor,
                         "train.early_stopping: null"))  # fmt: skip
    if cfg.checkpoint.keep_best:
        watchers.append((("checkpoint", "keep_best"), "checkpoint.keep_best", best_monitor(cfg),
                         "checkpoint.keep_best: false"))  # fmt: skip
    for section, what, metric, instead in watchers:
        if metric.startswith("val_") and not cfg.data.validation_split:
            where = yamlfile.where(positions, section, src)
            raise UserError(
                f"{where}: {what} monitors {metric}, but there is no validation set: "
                f"set data.validation_split > 0 or {instead}"
            )


def load(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
    check_names: bool = True,
    positions: dict[KeyPath, str] | None = None,
) -> Config:
    """Load a config file (or a dict), apply `--set` overrides, validate, and freeze it.

    `positions` (with `data`): where each key of `data` was written ('file:line', as
    yamlfile.parse gives), so that errors name it (dlintro.sweep merges two files)."""
    if path is not None:
        path = Path(path)
        path = yamlfile.config_file(path)  # a run directory stands for its config.yaml
        src = yamlfile.shown(path)  # one line even for a path with a newline or NUL in it
        text = yamlfile.read_config(path, src)  # every read failure: one line, exit 2
        raw, positions = yamlfile.parse(text, src)
    else:
        src, raw, positions = "<config>", data if data is not None else {}, dict(positions or {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{src}:1: a config is a mapping of keys (name:, model:, ...)")
    raw = yamlfile.deep_copy(raw)
    for text in overrides:
        yamlfile.apply_override(raw, text, positions)
    try:
        cfg = Config.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise UserError(schema_error(exc, positions, src, Config)) from None
    if cfg.train.epochs is None and cfg.train.steps is None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    if check_names:
        _check_names(cfg, positions, src)
        _check_consistency(cfg, positions, src)
    return cfg


# Keys whose change breaks a run that is resumed (its checkpoint, data order or plan).
BREAKING = (
    "seed", "data.dataset", "data.params", "data.batch_size", "data.validation_split",
    "data.normalize", "data.augment", "model", "optimizer", "schedule", "train.epochs",
    "train.steps", "train.label_smoothing", "train.l2", "train.ema", "distribution.batch",
    "distribution.lr_scaling",
)  # fmt: skip


def diff(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs."""
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k)
        elif a != b:
            out.append((key, a, b))

    walk(old.to_dict(), new.to_dict(), "")
    return out


def is_breaking(key: str) -> bool:
    return any(key == b or key.startswith(b + ".") for b in BREAKING)
