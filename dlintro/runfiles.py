"""The files of a run directory as read back, through one typed schema: meta.json, metrics.json
and a checkpoint's state.json. Every reader of a run directory (eval, predict, export, compare,
runs, resume) goes through here, so a damaged file is one UserError naming the file, the key
and what it should be ("RUN/meta.json: 'data' must be an object (found a list)"), never an
AttributeError deep inside.

The schemas are strict (a string where a number belongs is refused) but open: keys they do not
know are kept, so that newer fields and older runs both read. Declared input shapes stay within
dlintro.limits. Only regular files of bounded size are read (a FIFO named meta.json never
blocks). No TensorFlow: `dlintro runs` lists runs without it.

Also here, for every writer of run files: `file_mode`, the mode a new file gets (0666 minus the
umask), for files that are written through a temporary file (mkstemp makes them 0600).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dlintro import limits
from dlintro.errors import UserError

RUN_FILE_BYTES = 64 << 20  # meta.json, metrics.json, state.json: a run dlintro wrote is far below
CHECKPOINT_PREFIX = "step-"

Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


def _input_shape(shape: list[int]) -> list[int]:
    problem = limits.input_shape_problem(shape)
    if problem:
        raise ValueError(problem)
    return shape


class NormalizationRecord(_Record):
    """How images were normalized: (x * scale - mean) / std per channel."""

    mode: Literal["unit", "standardize", "none"]
    mean: Annotated[list[float], Field(min_length=1, max_length=limits.MAX_INPUT_CHANNELS)]
    std: Annotated[list[float], Field(min_length=1, max_length=limits.MAX_INPUT_CHANNELS)]

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> NormalizationRecord:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have one value per channel each")
        if not all(math.isfinite(m) for m in self.mean) or not all(
            math.isfinite(s) and s > 0 for s in self.std
        ):
            raise ValueError("mean must be finite and std finite and positive")
        return self


class DataRecord(_Record):
    """meta.json's `data`: what the run was trained on."""

    dataset: str | None = None
    root: str | None = None  # the data directory the run read
    num_train: Count | None = None
    num_validation: Count | None = None
    num_test: Count | None = None
    input_shape: Annotated[list[int], AfterValidator(_input_shape)] | None = None
    class_names: Annotated[list[str], Field(max_length=limits.MAX_CLASSES)] | None = None
    normalization: NormalizationRecord | None = None

    @pydantic.model_validator(mode="after")
    def _channels(self) -> DataRecord:
        norm, shape = self.normalization, self.input_shape
        if norm is not None and shape is not None and len(norm.mean) != shape[2]:
            raise ValueError(
                f"normalization has {len(norm.mean)} channel(s) but input_shape {shape} has "
                f"{shape[2]}"
            )
        return self


class PlanRecord(_Record):
    """meta.json's `plan`: the run's length and batch."""

    total_steps: Count | None = None
    epochs: Count | None = None
    steps_per_epoch: Positive | None = None
    batch_size: Positive | None = None
    steps_per_execution: Positive | None = None
    jit_compile: bool | None = None
    precision: str | None = None


class ModelRecord(_Record):
    name: str | None = None
    params: Count | None = None


class ResumeRecord(_Record):
    time: str | None = None
    from_step: Count | None = None
    changes: list[Any] = Field(default_factory=list)
    command: list[str] | None = None


class Meta(_Record):
    """meta.json: what ran, where, on what data, and how it went."""

    status: str | None = None
    pid: int | None = None
    host: str | None = None
    name: str | None = None
    command: list[str] | None = None
    started: str | None = None
    ended: str | None = None
    error: str | None = None
    seed: int | None = None
    versions: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    data: DataRecord | None = None
    plan: PlanRecord | None = None
    execution: dict[str, Any] | None = None  # its meaning is checked by train (tune.Decision)
    model: ModelRecord | None = None
    distribution: dict[str, Any] | None = None
    resumes: list[ResumeRecord] = Field(default_factory=list)
    steps: Count | None = None
    epochs: Count | None = None
    wall_seconds: float | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    steady_images_per_second: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    weights_sha256: str | None = None
    early_stopping: dict[str, Any] | None = None  # dlintro.early_stop's record
    best: dict[str, Any] | None = None


class Metrics(_Record):
    """metrics.json: the final model's test metrics (dlintro.evaluate.metrics)."""

    accuracy: float | None = None
    loss: float | None = None
    num_examples: Count | None = None
    class_names: list[str] | None = None
    per_class_accuracy: list[float | None] | None = None
    confusion_matrix: list[list[int]] | None = None


def _variable_list(entries: list[list[Any]]) -> list[list[Any]]:
    for entry in entries:
        ok = (
            len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry[1])
        )
        if not ok:
            raise ValueError(f"must be [name, shape] pairs, not {_short(entry)}")
    return entries


class CheckpointState(_Record):
    """A checkpoint's state.json: where training stood (dlintro.checkpoint)."""

    step: Count
    epoch: Count | None = None
    train_seconds: Annotated[float, Field(ge=0)] = 0.0
    running_metrics: Annotated[list[float], Field(min_length=3, max_length=3)] | None = None
    schedule: dict[str, Any] | None = None
    watch: dict[str, Any] | None = None  # dlintro.early_stop's state
    variables: dict[str, Annotated[list[list[Any]], AfterValidator(_variable_list)]] = Field(
        default_factory=dict
    )


# ----------------------------------------------------------------------------- reading

T = TypeVar("T", bound=BaseModel)


def read_json(path: str | Path, max_bytes: int = RUN_FILE_BYTES) -> Any:
    """A run file's JSON; UserError when it is missing, not a regular file, too large or not
    JSON."""
    try:
        data = limits.read_regular(path, max_bytes)
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except OSError as exc:  # a link loop, no permission on the directory
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def check(path: str | Path, raw: Any, schema: type[T]) -> T:
    """`raw` (a run file's JSON) validated by `schema`; UserError naming the file and key."""
    try:
        return schema.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise UserError(f"{path}: {problem(exc)}") from None


def load(path: str | Path, schema: type[T]) -> T:
    """Read and validate a run file: the typed record."""
    return check(path, read_json(path), schema)


def load_dict(path: str | Path, schema: type[BaseModel]) -> dict[str, Any]:
    """Read and validate a run file: its JSON object as written (for writing it back)."""
    raw = read_json(path)
    check(path, raw, schema)
    return raw


def meta(run_dir: str | Path) -> Meta:
    """A run's meta.json, typed."""
    return load(Path(run_dir) / "meta.json", Meta)


def metrics(run_dir: str | Path) -> Metrics | None:
    """A run's metrics.json, typed; None when the run has none yet."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists() and not path.is_symlink():
        return None
    return load(path, Metrics)


def checkpoint_dirs(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint directory (`step-<N>/` with a state.json),
    oldest first; temporary directories are never listed. Reads no file."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        digits = p.name.removeprefix(CHECKPOINT_PREFIX)
        named = p.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit()
        if named and p.is_dir() and (p / "state.json").is_file():
            found.append((int(digits), p))
    return sorted(found)


# ----------------------------------------------------------------------------- messages

_WANTS = {
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "missing": "is missing",
}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _found(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    return _short(value)


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def problem(exc: pydantic.ValidationError) -> str:
    """The first error of a run file's validation in words: "'data' must be an object (found a
    list)", "'plan.total_steps' must be >= 0 (found -3)"."""
    err = exc.errors()[0]
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind in _WANTS:
        wants = _WANTS[kind]
    elif kind == "literal_error":
        wants = f"must be one of {ctx.get('expected')}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
                "less_than": "<"}[kind]  # fmt: skip
        bound = next(iter(ctx.values()), "?")
        wants = f"must be {sign} {bound}"
    elif kind == "too_short":
        wants = f"must have at least {ctx.get('min_length')} item(s)"
    elif kind == "too_long":
        wants = f"must have at most {ctx.get('max_length')} item(s)"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        wants = msg[:1].lower() + msg[1:]
    where = _where(tuple(err["loc"]))
    if kind in ("too_short", "too_long"):
        found = f" (found {ctx.get('actual_length')})"
    elif kind in ("missing", "value_error"):
        found = ""
    else:
        found = f" (found {_found(value)})"
    if not where:
        if kind == "model_type":
            return f"must hold a JSON object (found {_found(value)})"
        return f"{wants}{found}"
    if kind == "value_error":  # a rule of the record's own: its words
        return f"'{where}': {wants}"
    return f"'{where}' {wants}{found}"


# ----------------------------------------------------------------------------- file modes


def umask() -> int:
    """The process's umask, read without changing it (/proc), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it (and put it back)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open(): 0666 minus the process's umask. Files written
    through a temporary file (mkstemp makes them 0600) are given it, so that a web server or
    another user can read a run's report as it can read index.html."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a new directory gets from mkdir(): 0777 minus the umask (mkdtemp makes 0700)."""
    return 0o777 & ~umask()


__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_FILE_BYTES",
    "CheckpointState",
    "DataRecord",
    "Meta",
    "Metrics",
    "ModelRecord",
    "NormalizationRecord",
    "PlanRecord",
    "ResumeRecord",
    "check",
    "checkpoint_dirs",
    "dir_mode",
    "file_mode",
    "load",
    "load_dict",
    "meta",
    "metrics",
    "problem",
    "read_json",
    "umask",
]
