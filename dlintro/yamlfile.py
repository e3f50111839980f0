"""Config files as YAML with positions: safe parsing that remembers where each key was written
(`file:line`), `--set KEY=VALUE` overrides that remember theirs, so that every config error can
name its source. No schema here (dlintro.config has it).

Reading is bounded (dlintro.limits): a config is a regular UTF-8 file of at most 1 MiB, and a
document (a file or one `--set` value) expands, through its aliases, to at most 100,000 nodes
nested at most 64 deep; a recursive alias is refused. The bounds are checked on the composed
node graph (where an alias is one shared node), before anything is expanded.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import yaml

from dlintro import limits
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


def shown(path: str | Path) -> str:
    """A path as error messages show it: control characters (NUL, newline) escaped, so that
    the message stays one line."""
    text = str(path)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def config_file(path: Path) -> Path:
    """`path`, or `path/config.yaml` when `path` is a directory holding one (a run directory);
    never raises (a path that cannot be checked is read, and refused, by read_config)."""
    run_config = path / "config.yaml"
    return run_config if os.path.isdir(path) and os.path.isfile(run_config) else path


def read_config(path: str | Path, source: str | None = None) -> str:
    """A config file's text. Every way it can fail to be read (missing, a directory, a FIFO or
    device, a symbolic-link loop, a NUL byte in the path, no permission, over the size limit,
    not UTF-8) is one UserError line naming it; a FIFO is never opened."""
    source = source if source is not None else shown(path)

    def cannot(why: str) -> UserError:
        return UserError(f"{source}: cannot read the config: {why}")

    if "\0" in str(path):
        raise cannot("the path contains a NUL byte")
    limit = limits.CONFIG_BYTES
    max_bytes = limit.value()
    try:
        problem = limits.not_regular(path)
        if problem:
            hint = " (give a YAML file, or a run directory holding config.yaml)"
            raise cannot(f"it {problem}{hint if 'directory' in problem else ''}")
        with limits.open_regular(path) as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        if os.path.islink(path):
            raise cannot("a broken symbolic link (its target does not exist)") from None
        raise UserError(f"{source}: no such config file") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            why += " (a symbolic-link loop)"
        raise cannot(why) from None
    if len(raw) > max_bytes:
        raise cannot(f"larger than {limit.text(max_bytes)}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cannot(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a node graph that is recursive (an alias inside its own anchor), expands to more
    than the YAML_NODES limit through aliases, or nests deeper than YAML_DEPTH.

    Iterative and memoized on the shared alias nodes: linear in the size of the text, however
    much it would expand (a "billion laughs" is refused in microseconds).
    """
    max_nodes, max_depth = limits.YAML_NODES.value(), limits.YAML_DEPTH.value()
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(k)] for k in kids), max_nodes + 1)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > max_depth:
                raise UserError(
                    f"{source}:{node.start_mark.line + 1}: YAML nested deeper than "
                    f"{limits.YAML_DEPTH.text(max_depth)}"
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise UserError(
                f"{source}:{node.start_mark.line + 1}: recursive YAML alias (an anchor used "
                "inside itself); write the value out instead"
            )
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    if size[id(root)] > max_nodes:
        raise UserError(
            f"{source}: the YAML expands, through its aliases, beyond "
            f"{limits.YAML_NODES.text(max_nodes)}"
        )


def _load(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Compose, check the expansion (check_expansion), then construct: (data, root node).

    YAML errors propagate; a nesting too deep for the parser itself is a UserError."""
    loader = FloatSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_expansion(node, source)
        return loader.construct_document(node), node
    except RecursionError:
        raise UserError(
            f"{source}: YAML nested too deeply to parse, over {limits.YAML_DEPTH.text()}"
        ) from None
    finally:
        loader.dispose()


def parse(text: str, source: str) -> tuple[Any, dict[KeyPath, str]]:
    """Parse YAML safely and within the limits (check_expansion); return the data and a map
    from key path to 'file:line'."""
    try:
        data, node = _load(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UserError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a NUL or other control character in the text
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line = text.count("\n", 0, exc.position) + 1
        raise UserError(
            f"{source}:{line}: not YAML text: character #x{char:04x} is not allowed "
            "(a binary file, or a NUL byte?)"
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: YAML error: {' '.join(str(exc).split())}") from None
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
        value = _load(raw, f"--set {text}")[0] if raw.strip() else None
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
