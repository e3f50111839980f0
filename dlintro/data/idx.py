"""The IDX file format of MNIST and Fashion-MNIST, parsed with numpy only.

An IDX file is a big-endian header (two zero bytes, a type byte, the number of dimensions, one
uint32 per dimension) followed by the data in C order. Only unsigned bytes (type 0x08) are
supported: that is what every official file uses. Every problem is a `UserError` that names the
file, because these files come from outside (a download, a mirror, a user's directory).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dlintro import limits
from dlintro.errors import UserError

UBYTE = 0x08
TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
GZIP_MAGIC = b"\x1f\x8b"
TAIL_CHUNK = 1 << 20  # trailing bytes past the declared data are counted up to this, not kept


def _is_gzip_name(path: Path) -> bool:
    return path.name.endswith(".gz")


def _check_prefix(raw: bytes, source: str) -> int:
    """Check the first four header bytes (magic, type, dimensions); return the dimensions."""
    if len(raw) < 4:
        raise UserError(f"{source}: too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, dtype, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        hint = ""
        if raw[:2] == GZIP_MAGIC:
            hint = "; the data looks gzip-compressed: give the file a .gz name"
        raise UserError(
            f"{source}: not an IDX file: bad magic {raw[:4].hex(' ')} (expected 00 00 08 0N){hint}"
        )
    if dtype != UBYTE:
        kind = TYPE_NAMES.get(dtype, "unknown")
        raise UserError(
            f"{source}: unsupported IDX data type 0x{dtype:02x} ({kind}); "
            "only 0x08 (unsigned byte) is supported"
        )
    if not 1 <= ndim <= 4:
        raise UserError(f"{source}: bad number of dimensions {ndim} (expected 1 to 4)")
    return ndim


def _dims(raw: bytes, source: str, ndim: int) -> tuple[tuple[int, ...], int]:
    """The declared dimensions and data size, refused above the DATA_FILE_BYTES limit."""
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise UserError(
            f"{source}: truncated header: {ndim} dimensions need {header_size} bytes, "
            f"found {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = math.prod(dims)
    limit = limits.DATA_FILE_BYTES
    if expected > limit.value():
        raise UserError(
            f"{source}: header declares {_shape(dims)} = {expected:,} bytes of data, more than "
            f"{limit.text()}"
        )
    return dims, expected


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def _array(data: bytes, dims: tuple[int, ...], source: str, extra: str = "") -> np.ndarray:
    """The data bytes as a read-only array of `dims`; too few or too many bytes are refused.
    `extra` describes trailing bytes that were not read (a stream stopped early)."""
    expected, found = math.prod(dims), len(data)
    if found < expected:
        raise UserError(
            f"{source}: truncated: header says {_shape(dims)} = {expected} bytes of data, "
            f"found {found}"
        )
    if found > expected or extra:
        more = extra or f"found {found} ({found - expected} extra)"
        raise UserError(
            f"{source}: trailing bytes: header says {_shape(dims)} = {expected} bytes of data, "
            f"{more}"
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(dims)
    array.flags.writeable = False
    return array


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes into a read-only uint8 array; `source` names the file in errors."""
    ndim = _check_prefix(raw, source)
    dims, _ = _dims(raw, source, ndim)
    return _array(memoryview(raw)[4 + 4 * ndim :], dims, source)


def _read_stream(f: BinaryIO, source: str) -> np.ndarray:
    """Read an IDX stream header first, then exactly the declared data: never more than the
    declared size plus one chunk, however far a (gzip) stream would inflate."""
    head = f.read(4)
    ndim = _check_prefix(head, source)
    head += f.read(4 * ndim)
    dims, expected = _dims(head, source, ndim)
    data = f.read(expected)
    extra = ""
    if len(data) == expected:
        tail = f.read(TAIL_CHUNK)
        if tail:  # count what follows, up to one more chunk, without keeping it
            more = len(tail) + len(f.read(TAIL_CHUNK))
            extra = (
                f"found {expected + more} ({more} extra)"
                if more <= TAIL_CHUNK
                else f"found more than {expected + more} (the rest not read)"
            )
    return _array(data, dims, source, extra)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in .gz) as a read-only uint8 array.

    Only a regular file is opened (never a FIFO or device), the header is read first and the
    declared size checked against the DATA_FILE_BYTES limit (dlintro.limits) before the data is
    read, and a stream is never inflated beyond that size."""
    path = Path(path)
    source = str(path)
    try:
        with limits.open_regular(path) as raw:
            if _is_gzip_name(path):
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read_stream(f, source)
            return _read_stream(raw, source)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UserError as exc:
        if "is a directory" in str(exc):
            raise UserError(f"{path}: is a directory, not an IDX file") from None
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz); for tests and tools."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got {array.dtype}")
    if not 1 <= array.ndim <= 4:
        raise ValueError(f"write_idx supports 1 to 4 dimensions, got {array.ndim}")
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if _is_gzip_name(path):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
