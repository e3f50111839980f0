"""Config files as YAML with positions: safe parsing that remembers where each key was written
(`file:line`), `--set KEY=VALUE` overrides that remember theirs, so that every config error can
name its source. No schema here (dlintro.config has it).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from dlintro.errors import UserError


class FloatSafeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`)."""


FloatSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

KeyPath = tuple[str | int, ...]


def parse(text: str, source: str) -> tuple[Any, dict[KeyPath, str]]:
    """Parse YAML safely; return the data and a map from key path to 'file:line'."""
    try:
        node = yaml.compose(text, Loader=FloatSafeLoader)
        data = yaml.load(text, Loader=FloatSafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UserError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: YAML error: {exc}") from None
    positions: dict[KeyPath, str] = {}

    def walk(n: yaml.Node, path: KeyPath) -> None:
        positions[path] = f"{source}:{n.start_mark.line + 1}"
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = key_node.value
                if key in seen:
                    raise UserError(
                        f"{source}:{key_node.start_mark.line + 1}: duplicate key "
                        f"'{dotted((*path, key))}'"
                    )
                seen.add(key)
                walk(value_node, (*path, key))
                positions[(*path, key)] = f"{source}:{key_node.start_mark.line + 1}"
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return data, positions


def dotted(path: KeyPath) -> str:
    """('data', 'augment', 0, 'name') -> 'data.augment[0].name'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def where(positions: dict[KeyPath, str], path: KeyPath, default: str) -> str:
    """Where `path` (or its nearest enclosing section) was set: 'file:line' or '--set ...'."""
    for n in range(len(path), -1, -1):
        if path[:n] in positions:
            return positions[path[:n]]
    return default


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=c' -> (['a', 'b'], c) with c read as YAML (so numbers, lists and null work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not all(key.split(".")):
        raise UserError(f"--set {text}: expected KEY=VALUE, for example --set data.batch_size=64")
    try:
        value = yaml.load(raw, Loader=FloatSafeLoader) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"--set {text}: the value is not valid YAML: {problem}") from None
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], text: str, positions: dict[KeyPath, str]) -> None:
    """Apply one `--set a.b=c` to the raw config `data`, and note where a.b now comes from."""
    keys, value = parse_override(text)
    node = data
    for i, key in enumerate(keys[:-1]):
        prefix = tuple(keys[: i + 1])
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise UserError(f"--set {text}: '{'.'.join(prefix)}' is not a section")
        if positions.get(prefix, "--set").startswith("--set"):
            # A section that only --set made answers for the latest --set that touched it.
            positions[prefix] = f"--set {text}"
        node = child
    node[keys[-1]] = value
    path = tuple(keys)
    for p in [p for p in positions if p[: len(path)] == path]:
        del positions[p]
    positions[path] = f"--set {text}"


def deep_copy(value: Any) -> Any:
    """A copy of nested dicts and lists (what YAML gives), so overrides never alter the input."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value
