"""The run directory: naming, claiming, atomic writes, metadata, and finding runs again."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from dlintro.errors import UserError

DEFAULT_ROOT = Path("runs")


def create(name: str, run_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Claim a new run directory: `run_dir` if given (it must not hold anything yet), else
    `<root>/<name>-<YYYYmmdd-HHMMSS>` with a numeric suffix if that name is taken."""
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(
                f"{path}: the run directory exists and is not empty; choose a new --run-dir "
                "(runs are never overwritten)"
            )
        _mkdir(path, exist_ok=True)
        return path
    base = Path(root or os.environ.get("DLINTRO_RUNS_DIR") or DEFAULT_ROOT)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = base / (f"{name}-{stamp}" if i == 1 else f"{name}-{stamp}-{i}")
        try:
            _mkdir(path, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise UserError(f"{base}: could not find a free run directory name for '{name}'")


def _mkdir(path: Path, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot create the run directory: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: the run directory is not writable")


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: a temporary file in the same directory, then a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def update_meta(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into meta.json (atomically) and return the result."""
    path = Path(run_dir) / "meta.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    meta.update(fields)
    write_json(path, meta)
    return meta


def open_run(run_dir: str | Path) -> Path:
    """Check that `run_dir` is a finished-or-running dlintro run; return it as a Path."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory")
    missing = [n for n in ("config.yaml", "meta.json") if not (path / n).is_file()]
    if missing:
        raise UserError(
            f"{path}: not a dlintro run directory (missing {', '.join(missing)}); "
            "pass a directory made by 'dlintro train', such as runs/<name>-<time>"
        )
    return path


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run metadata: {exc}") from None


def model_path(run_dir: str | Path) -> Path:
    """The trained model of a run, or a UserError when the run never finished."""
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        status = read_meta(run_dir).get("status", "unknown")
        raise UserError(f"{path}: the run has no final model (status: {status})")
    return path


def now() -> str:
    """The local time in ISO 8601, as meta.json records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def versions() -> dict[str, str]:
    """Versions that decide what a run does, for meta.json."""
    import keras
    import numpy as np
    import tensorflow as tf

    import dlintro

    return {
        "dlintro": dlintro.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def machine() -> dict[str, Any]:
    """Where the run ran, for meta.json."""
    import tensorflow as tf

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }
