"""What is registered, for people: every name of the five registries with a one-line
description and its parameters (`dlintro list`), each model's parameter count at its default
input (`dlintro models`), and the README's "Registered names" section generated from the same
entries (scripts/registered_names.py writes it; tests/test_ux.py checks it), so that no name has
to be discovered from an error message.

Each registry is imported only when its kind is asked for: datasets and augmentations need no
TensorFlow, models, optimizers and schedules import Keras.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlintro.errors import UserError
from dlintro.registry import Registry, did_you_mean

# kind -> (module holding the registry, its attribute, the config key that takes the name)
KINDS: dict[str, tuple[str, str, str]] = {
    "models": ("dlintro.models", "MODELS", "model.name"),
    "datasets": ("dlintro.data", "DATASETS", "data.dataset"),
    "optimizers": ("dlintro.optim", "OPTIMIZERS", "optimizer.name"),
    "schedules": ("dlintro.schedules", "SCHEDULES", "schedule.name"),
    "augmentations": ("dlintro.data.augment", "AUGMENTATIONS", "data.augment[].name"),
}
PARAMS_KEY = {
    "models": "model.params",
    "datasets": "data.params",
    "optimizers": "optimizer.params",
    "schedules": "schedule.params",
    "augmentations": "data.augment[].params",
}
REQUIRED = "(required)"
START, END = "<!-- names:start -->", "<!-- names:end -->"


@dataclass(frozen=True)
class Entry:
    """One registered name: what it is, its group (a model's family, an augmentation's kind)
    and its parameters with their defaults (REQUIRED when there is none)."""

    name: str
    description: str
    group: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "group": self.group,
                "params": self.params}  # fmt: skip


def kind_of(text: str) -> str:
    """The kind named by `text` ('models', or 'model'); a UserError listing the kinds."""
    kind = text if text in KINDS else f"{text}s"
    if kind not in KINDS:
        valid = ", ".join(KINDS)
        raise UserError(f"unknown kind '{text}'{did_you_mean(text, list(KINDS))}; valid: {valid}")
    return kind


def registry(kind: str) -> Registry[Any]:
    """The registry of `kind`, its families imported (so every name is registered)."""
    module, attribute, _ = KINDS[kind_of(kind)]
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """A default as JSON holds it: tuples become lists, anything else not JSON-able a string."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _description(kind: str, reg: Registry[Any], name: str) -> str:
    meta = reg.meta(name)
    if kind == "datasets":
        return str(meta["info"].description)
    return str(meta.get("description", ""))


def _group(kind: str, meta: dict[str, Any]) -> str:
    if kind == "models":
        return str(meta.get("family", ""))
    if kind == "augmentations":
        return "mixing" if meta.get("mixing") else "per image"
    return ""


def entries(kind: str) -> list[Entry]:
    """Every registered name of `kind`, sorted, with its description and parameters."""
    kind = kind_of(kind)
    reg = registry(kind)
    out = []
    for name in reg.names():
        params = {
            key: REQUIRED if p.default is inspect.Parameter.empty else plain(p.default)
            for key, p in reg.params(name).items()
        }
        out.append(Entry(name, _description(kind, reg, name), _group(kind, reg.meta(name)), params))
    return out


# ----------------------------------------------------------------------------- model counts


# Builders written for CIFAR's 32x32 images (a variant names its base in its metadata).
CIFAR_BUILDERS = frozenset(
    {"resnet_cifar", "preact_resnet_cifar", "nin", "allcnn", "keras_cifar_conv"}
)
IMAGENET_FAMILIES = frozenset({"alexnet", "vgg", "inception", "resnet"})


def default_input(name: str) -> tuple[str, dict[str, Any]]:
    """The dataset (and its params) whose input a model is shown at: the one its published
    recipe used. CIFAR-10 for the CIFAR builders and names with "cifar" in them, ImageNet
    (227x227 for AlexNet) for the ImageNet families, MNIST for the rest."""
    reg = registry("models")
    meta = reg.meta(name)
    base = str(meta.get("base") or name)
    if base in CIFAR_BUILDERS or "cifar" in name:
        return "cifar10", {}
    if meta.get("family") in IMAGENET_FAMILIES:
        return "imagenet", ({"image_size": 227} if name == "alexnet" else {})
    return "mnist", {}


@dataclass(frozen=True)
class ModelCount:
    """A model's parameter count at its default input (None, with the reason, if it cannot
    take that input)."""

    name: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    parameters: int | None
    trainable: int | None
    problem: str = ""


def count_parameters(names: list[str] | None = None, cache: bool = True) -> list[ModelCount]:
    """Each model's parameter count at its default input (default: every registered model).

    The models are built inside a Keras StatelessScope, so that no weight is allocated or
    initialized (VGG-19's 144 million parameters cost nothing): a count needs only the shapes.
    The same builder and arguments as `dlintro summary`, so the totals are equal. Counts are
    cached (`<cache>/dlintro/model_counts.json`) under a key made of the builders' source files
    and the Keras version, so a changed builder is counted again.
    """
    from dlintro import data

    names = registry("models").names() if names is None else names
    known = _read_cache() if cache else {}
    out, fresh = [], {}
    for name in names:
        dataset, params = default_input(name)
        info = data.dataset_info(dataset, params)
        shape, classes = tuple(int(d) for d in info.input_shape), int(info.num_classes)
        key = _cache_key(name, dataset, shape, classes)
        hit = known.get(key)
        if not (isinstance(hit, list) and len(hit) == 3):
            hit = _count(name, shape, classes)
        fresh[key] = hit
        total, trainable, problem = hit
        out.append(ModelCount(name, dataset, shape, classes, total, trainable, str(problem)))
    if cache and fresh != {k: known.get(k) for k in fresh}:
        _write_cache({**known, **fresh} if len(known) < 1000 else fresh)
    return out


def _count(name: str, shape: tuple[int, ...], classes: int) -> list[Any]:
    """[total, trainable, ''] for model `name` built without weights, or [None, None, why]."""
    import keras
    from keras.src.backend.common import global_state

    from dlintro import models
    from dlintro.registry import ParamsError

    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key, []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = models.build(name, shape, classes)
        total = int(model.count_params())  # from the variables' shapes
        return [total, sum(_size(w) for w in model.trainable_weights), ""]
    except ParamsError as exc:
        return [None, None, exc.detail]
    finally:  # the deferred variables are dropped, never initialized later
        global_state.set_global_attribute(key, before)


def cache_path() -> Path:
    """`$XDG_CACHE_HOME/dlintro/model_counts.json` (else ~/.cache/dlintro/...), beside tune's."""
    from dlintro import tunecache

    return tunecache.cache_path().with_name("model_counts.json")


@functools.lru_cache(maxsize=1)
def _sources_digest() -> str:
    """What the counts depend on: every builder's source file and the Keras version."""
    import keras

    from dlintro import models
    from dlintro import registry as registry_mod

    digest = hashlib.sha256(keras.__version__.encode())
    files = set(Path(models.__file__).parent.glob("*.py")) | {Path(registry_mod.__file__)}
    reg = registry("models")
    for name in reg.names():
        module = sys.modules.get(getattr(reg.get(name), "__module__", ""), None)
        if getattr(module, "__file__", None):
            files.add(Path(module.__file__))  # type: ignore[union-attr, arg-type]
    for path in sorted(files):
        with contextlib.suppress(OSError):
            digest.update(str(path.name).encode() + path.read_bytes())
    return digest.hexdigest()


def _cache_key(name: str, dataset: str, shape: tuple[int, ...], classes: int) -> str:
    text = json.dumps([_sources_digest(), name, dataset, list(shape), classes])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: count again
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, Any]) -> None:
    """Best effort: a read-only or full cache directory is skipped."""
    from dlintro import runfiles

    path = cache_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, runfiles.file_mode())
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data) + "\n")
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _size(variable: Any) -> int:
    return math.prod(int(d) for d in variable.shape)


# ----------------------------------------------------------------------------- the README


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _params_cell(params: dict[str, Any]) -> str:
    shown = []
    for key, value in params.items():
        if value == REQUIRED:
            shown.append(f"`{key}` (required)")
        else:
            shown.append(f"`{key}={json.dumps(value)}`")
    return _cell(", ".join(shown)) or "-"


def readme_section() -> str:
    """The README's "Registered names" section, markers included, from the registries."""
    lines = [
        START,
        "### Registered names",
        "",
        "Every name a config can use, generated from the registries by",
        "`python scripts/registered_names.py` (a test fails when this list is out of date);",
        "`dlintro list KIND` prints the same in the terminal (`--json` for scripts) and",
        "`dlintro models` adds each model's parameter count.",
    ]
    for kind, (_, _, key) in KINDS.items():
        lines += ["", f"**{kind.capitalize()}** (`{key}`; parameters in `{PARAMS_KEY[kind]}`):", ""]
        extra = {"models": "family", "augmentations": "kind"}.get(kind)
        header = ["name", *([extra] if extra else []), "what", "parameters (defaults)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for e in entries(kind):
            row = [f"`{e.name}`", *([e.group] if extra else []), _cell(e.description)]
            lines.append("| " + " | ".join([*row, _params_cell(e.params)]) + " |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def readme_problems(readme: str) -> list[str]:
    """What is wrong with the README's names section: missing markers, registered names it
    lacks, and names it lists that are not registered (empty when it is true)."""
    match = re.search(re.escape(START) + r"(.*?)" + re.escape(END), readme, re.S)
    if match is None:
        return [f"no section between {START} and {END}"]
    section = match.group(1)
    problems = []
    listed: dict[str, set[str]] = {}
    kind = ""
    for line in section.splitlines():
        if heading := re.match(r"\*\*(\w+)\*\*", line):
            kind = heading.group(1).lower()
            listed[kind] = set()
        elif kind and (row := re.match(r"\| `([^`]+)` \|", line)):
            listed[kind].add(row.group(1))
    for kind in KINDS:
        names = set(registry(kind).names())
        have = listed.get(kind, set())
        problems += [f"{kind}: '{n}' is registered but not listed" for n in sorted(names - have)]
        problems += [f"{kind}: '{n}' is listed but not registered" for n in sorted(have - names)]
    return problems


def replace_section(readme: str, section: str) -> str:
    """`readme` with its names section (markers included) replaced by `section`."""
    pattern = re.escape(START) + r".*?" + re.escape(END) + r"\n?"
    if not re.search(pattern, readme, re.S):
        raise UserError(f"README.md: no section between {START} and {END} to replace")
    return re.sub(pattern, lambda _: section, readme, count=1, flags=re.S)
