"""Bounds on every outside input, checked before anything is allocated, and the one way to open
an outside file (regular files only, so that a FIFO or a device never makes dlintro wait or
read forever).

    DLINTRO_MAX_CONFIG_BYTES     a config file's size: 1 MiB
    DLINTRO_MAX_YAML_NODES       YAML nodes after alias expansion (a file or one --set): 100,000
    DLINTRO_MAX_YAML_DEPTH       YAML nesting: 64 levels
    DLINTRO_MAX_DATA_FILE_BYTES  a data file, decompressed (IDX data, CIFAR records): 1 GiB
    DLINTRO_MAX_IMAGE_PIXELS     an image's width x height, from its header: 50,000,000

The run files' input shape (meta.json) has fixed bounds (`MAX_INPUT_SIDE`, `MAX_INPUT_CHANNELS`,
`MAX_INPUT_VALUES`, `MAX_CLASSES`): a run dlintro wrote never comes near them. A leaf module: it
imports nothing of dlintro but its errors.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dlintro.errors import UserError


@dataclass(frozen=True)
class Limit:
    """One configurable bound: its environment variable, default and unit."""

    env: str
    default: int
    unit: str

    def value(self) -> int:
        """The bound in force: the environment variable when set, else the default."""
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(
                f"${self.env}={raw!r}: expected a positive whole number of {self.unit} "
                f"(default {self.default:,})"
            )
        return value

    def text(self, value: int | None = None) -> str:
        """'the limit of 1,048,576 bytes ($DLINTRO_MAX_CONFIG_BYTES raises it)'."""
        value = self.value() if value is None else value
        return f"the limit of {value:,} {self.unit} (${self.env} raises it)"


CONFIG_BYTES = Limit("DLINTRO_MAX_CONFIG_BYTES", 1 << 20, "bytes")
YAML_NODES = Limit("DLINTRO_MAX_YAML_NODES", 100_000, "YAML nodes")
YAML_DEPTH = Limit("DLINTRO_MAX_YAML_DEPTH", 64, "levels of nesting")
DATA_FILE_BYTES = Limit("DLINTRO_MAX_DATA_FILE_BYTES", 1 << 30, "bytes")
IMAGE_PIXELS = Limit("DLINTRO_MAX_IMAGE_PIXELS", 50_000_000, "pixels")
TEXT_FILE_BYTES = 1 << 20  # small text files read from data folders (class-name lists)

# Run files (meta.json): a model's declared input, checked before anything is allocated for it.
MAX_INPUT_SIDE = 4096  # height and width, as for image_folder's image_size
MAX_INPUT_CHANNELS = 4
MAX_INPUT_VALUES = 4096 * 4096  # height x width x channels of one image (16 MiB as uint8)
MAX_CLASSES = 100_000


def input_shape_problem(shape: object) -> str:
    """Why `shape` is not a sane [height, width, channels] ('' when it is)."""
    if not isinstance(shape, list | tuple) or len(shape) != 3:
        return f"{shape!r} is not [height, width, channels]"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        return f"{list(shape)!r}: every size must be a whole number >= 1"
    h, w, c = shape
    if max(h, w) > MAX_INPUT_SIDE:
        return f"{list(shape)!r}: height and width may be at most {MAX_INPUT_SIDE}"
    if c > MAX_INPUT_CHANNELS:
        return f"{list(shape)!r}: at most {MAX_INPUT_CHANNELS} channels"
    if h * w * c > MAX_INPUT_VALUES:
        return f"{list(shape)!r}: more than {MAX_INPUT_VALUES:,} values per image"
    return ""


# --------------------------------------------------------------------------- regular files

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What a file of this st_mode is: 'a FIFO (named pipe)', 'a directory', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str | Path) -> str:
    """'' for a regular file (symbolic links followed); else what it is, in a few words.

    OSError (missing, a link loop, no permission) propagates. Never opens the file.
    """
    mode = os.stat(path).st_mode
    return "" if stat.S_ISREG(mode) else f"is {kind(mode)}, not a regular file"


def open_regular(path: str | Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file: never blocks on a FIFO, never
    opens a device. A non-regular file is a UserError naming it; OSError propagates."""
    problem = not_regular(path)
    if problem:
        raise UserError(f"{path}: {problem}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode  # the file opened is the one checked (no swap in between)
        if not stat.S_ISREG(mode):
            raise UserError(f"{path}: is {kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, max_bytes: int, limit_text: str = "") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (checked before reading); problems
    are UserErrors naming the file (a missing file: FileNotFoundError, for the caller's words).
    """
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(max_bytes + 1) if size <= max_bytes else b""
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > max_bytes or len(data) > max_bytes:
        limit = limit_text or f"the limit of {max_bytes:,} bytes"
        found = f"{size:,} bytes" if size > max_bytes else f"more than {max_bytes:,} bytes"
        raise UserError(f"{path}: {found}, larger than {limit}")
    return data


__all__ = [
    "CONFIG_BYTES",
    "DATA_FILE_BYTES",
    "IMAGE_PIXELS",
    "MAX_CLASSES",
    "MAX_INPUT_CHANNELS",
    "MAX_INPUT_SIDE",
    "MAX_INPUT_VALUES",
    "TEXT_FILE_BYTES",
    "YAML_DEPTH",
    "YAML_NODES",
    "Limit",
    "input_shape_problem",
    "kind",
    "not_regular",
    "open_regular",
    "read_regular",
]
