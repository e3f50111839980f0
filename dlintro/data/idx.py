"""The IDX file format of MNIST and Fashion-MNIST, parsed with numpy only.

An IDX file is a big-endian header (two zero bytes, a type byte, the number of dimensions, one
uint32 per dimension) followed by the data in C order. Only unsigned bytes (type 0x08) are
supported: that is what every official file uses. Every problem is a `UserError` that names the
file, because these files come from outside (a download, a mirror, a user's directory).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

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


def _is_gzip_name(path: Path) -> bool:
    return path.name.endswith(".gz")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz."""
    try:
        if _is_gzip_name(path):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an IDX file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes into a read-only uint8 array; `source` names the file in errors."""
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
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise UserError(
            f"{source}: truncated header: {ndim} dimensions need {header_size} bytes, "
            f"found {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header_size
    shape_txt = "x".join(str(d) for d in dims)
    if found < expected:
        raise UserError(
            f"{source}: truncated: header says {shape_txt} = {expected} bytes of data, "
            f"found {found}"
        )
    if found > expected:
        raise UserError(
            f"{source}: trailing bytes: header says {shape_txt} = {expected} bytes of data, "
            f"found {found} ({found - expected} extra)"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)
    array.flags.writeable = False
    return array


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in .gz) as a read-only uint8 array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


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
