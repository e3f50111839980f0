"""Schema errors of the config as one line each: where the bad value came from (`file:line` or
the `--set` argument), the key, and what would be right (did-you-mean for unknown keys)."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel

from dlintro import yamlfile
from dlintro.registry import clean_loc, did_you_mean
from dlintro.yamlfile import KeyPath


def fields_at(root: type[BaseModel], path: KeyPath) -> list[str]:
    """Valid keys of the config section at `path` (for did-you-mean on unknown keys)."""
    model: Any = root
    for part in path:
        if isinstance(part, int):  # an item of a list section (data.augment, optimizer.groups)
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def format_value(value: Any) -> str:
    """A value as an error message shows it (repr, at most 40 characters)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Keys that older versions accepted, and why they are gone (said instead of "unknown key").
_REMOVED = {
    "data.shuffle_buffer": "removed: every epoch shuffles the whole training set; delete the key",
}


def schema_error(
    exc: pydantic.ValidationError, positions: dict[KeyPath, str], src: str, root: type[BaseModel]
) -> str:
    """One line for the first schema error: where, the key, and what would be right."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = clean_loc(tuple(errors[0]["loc"]))
    where = yamlfile.where(positions, loc, src)
    key = yamlfile.dotted(loc)
    err = errors[0]
    if err["type"] == "extra_forbidden":
        if key in _REMOVED:
            return f"{where}: '{key}' was {_REMOVED[key]}"
        valid = fields_at(root, loc[:-1])
        hint = did_you_mean(str(loc[-1]), valid) or f" (valid keys: {', '.join(valid)})"
        return f"{where}: unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    # A union (e.g. 'auto' or a boolean) fails once per member: say all the options at once.
    msgs: list[str] = []
    for e in errors:
        if clean_loc(tuple(e["loc"])) == loc:
            m = str(e["msg"]).removeprefix("Value error, ")
            m = m[:1].lower() + m[1:]
            if msgs:
                m = m.removeprefix("input should be ")
            if m not in msgs:
                msgs.append(m)
    msg = " or ".join(msgs)
    value = err.get("input")
    if not loc or isinstance(value, dict):
        return f"{where}: {key + ': ' if loc else ''}{msg}"
    return f"{where}: {key} = {format_value(value)}: {msg}"
