"""The run directory, its one owner: naming and claiming it, atomic writes, meta.json,
history.csv, whether its process lives, the run spec and the model that predict, export and
eval read back.

    runs/<name>/  config.yaml  meta.json  history.csv  metrics.json  model.keras
                  checkpoints/  logs/  report/  export/

Run files are read back through their schemas (dlintro.runfiles); a training process holds
the run's lock (dlintro.runlock) from its claim to its end. No TensorFlow at import (the CLI
lists runs without it); loading the model imports Keras.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dlintro import limits, runfiles, runlock
from dlintro.errors import UserError
from dlintro.runlock import LOCK_NAME, RunLock

DEFAULT_ROOT = Path("runs")
HISTORY = "history.csv"


def default_root() -> Path:
    """Where runs go unless told: $DLINTRO_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("DLINTRO_RUNS_DIR") or DEFAULT_ROOT)


def create(name: str, run_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Claim a new run directory: `run_dir` if given (it must not hold anything yet), else
    `<root>/<name>-<YYYYmmdd-HHMMSS>` with a numeric suffix if that name is taken."""
    if run_dir is not None:
        path = Path(run_dir)
        if path.is_dir() and (pid := runlock.holder(path)):
            raise runlock.refusal(path, pid)  # another process claimed it (and is training)
        if path.exists() and (not path.is_dir() or _taken(path)):
            raise UserError(
                f"{path}: the run directory exists and is not empty; choose a new --run-dir "
                "(runs are never overwritten)"
            )
        _mkdir(path, exist_ok=True)
        return path
    base = Path(root) if root else default_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = base / (f"{name}-{stamp}" if i == 1 else f"{name}-{stamp}-{i}")
        try:
            _mkdir(path, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise UserError(f"{base}: could not find a free run directory name for '{name}'")


def claim(name: str, run_dir: str | Path | None = None, root: str | Path | None = None) -> RunLock:
    """Create a run directory (see `create`) and take its lock (held until released: the
    training process's whole life). A directory that another process claimed at the same moment
    is refused: its lock names that process, or it is no longer empty."""
    path = create(name, run_dir, root)
    lock = RunLock(path).acquire()
    if _taken(path):  # claimed, written and let go by another process since create
        lock.release()
        raise UserError(
            f"{path}: the run directory exists and is not empty; choose a new --run-dir "
            "(runs are never overwritten)"
        )
    return lock


def _taken(path: Path) -> bool:
    """Whether a directory holds anything but a lock file (of a process that claimed it)."""
    return any(p.name != LOCK_NAME for p in path.iterdir())


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
    """Write a file atomically: a temporary file in the same directory, then a rename. The file
    gets the usual mode (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, runfiles.file_mode())
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
    meta = runfiles.read_json(path) if path.exists() else {}
    meta = meta if isinstance(meta, dict) else {}
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
    """meta.json as written, validated by its schema (runfiles.Meta): every key has its type,
    so `.get` chains are safe; a damaged file is a UserError naming the key."""
    return runfiles.load_dict(Path(run_dir) / "meta.json", runfiles.Meta)


def recorded_data_root(run_dir: str | Path) -> str | None:
    """The data directory a run recorded in meta.json (`data.root`), for data.data_root."""
    data = runfiles.meta(Path(run_dir)).data
    return data.root if data is not None else None


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

    from dlintro import tune

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": tune.cpu_facts(),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }


def timestamp(text: Any) -> float | None:
    """A time as now() writes it ('%Y-%m-%dT%H:%M:%S%z') as a Unix time; None if it is not."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


# ----------------------------------------------------------------------------- the process


def process_alive(pid: Any, host: Any, since: float | None = None) -> bool | None:
    """Whether process `pid` lives: True or False on this host, None when it cannot be told
    (another host, no pid). A process that started after `since` is a reused pid: not alive."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    if host not in (None, socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    return not (since is not None and started is not None and started > since + 5)


def _process_start(pid: int) -> float | None:
    """The start time (Unix) of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def writer_alive(meta: dict[str, Any], pid_reuse: bool = True) -> bool | None:
    """Whether the process that meta.json says is writing the run (status running) still
    lives; None when that cannot be told or the run is not running. With `pid_reuse`, a
    process younger than the run's start is taken for a reused pid (not the writer)."""
    if meta.get("status") != "running":
        return None
    since = timestamp(meta.get("started")) if pid_reuse else None
    return process_alive(meta.get("pid"), meta.get("host"), since)


def check_not_live(run_dir: str | Path, meta: dict[str, Any]) -> None:
    """Refuse a run that another live process on this machine is still writing. Any live
    process with that pid counts (no pid-reuse guess): a wrong refusal only asks the user to
    wait, a wrong pass would let two processes write one run."""
    pid = meta.get("pid")
    if pid != os.getpid() and writer_alive(meta, pid_reuse=False):
        raise UserError(
            f"{run_dir}: the run is still being written by process {pid}; wait or stop it"
        )


# ----------------------------------------------------------------------------- history.csv


def append_history(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Add one epoch's row to history.csv (the header with the first row); floats as %.6g."""
    path = Path(run_dir) / HISTORY
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def history_rows(run_dir: str | Path) -> list[dict[str, str]]:
    """history.csv's rows as text; [] when there is none; UserError when it cannot be read as
    CSV (a resume checks this before writing anything)."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    try:
        text = limits.read_regular(path, runfiles.RUN_FILE_BYTES).decode("utf-8")
        rows = list(csv.DictReader(text.splitlines()))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc).split(":")[0]
        raise UserError(f"{path}: cannot be read as CSV ({why})") from None
    return [{k: v for k, v in row.items() if isinstance(k, str) and k} for row in rows]


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """history.csv as numbers (NaN for empty, missing or damaged values); [] when there is
    none or it cannot be read."""
    try:
        rows = history_rows(run_dir)
    except UserError:
        return []
    return [{k: _float(v) for k, v in row.items()} for row in rows]


def keep_history_until(run_dir: str | Path, step: int) -> None:
    """On resume, drop history rows written after the checkpoint being resumed (and rows
    whose step is not a number)."""
    path = Path(run_dir) / HISTORY
    rows = [r for r in history_rows(run_dir) if _float(r.get("step")) <= step]
    if not rows:
        path.unlink(missing_ok=True)
        return
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r.get(c) or "") for c in columns) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ----------------------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class RunSpec:
    """What predict, export and eval need to know about a finished run."""

    run_dir: Path
    config: Any
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    normalization: dict[str, Any]
    batch_size: int


def run_spec(run_dir: str | Path) -> RunSpec:
    """A finished run's config, input shape, class names and saved normalization."""
    from dlintro import config
    from dlintro.data import dataset_info, normalization

    path = open_run(run_dir)
    model_path(path)  # a run without a final model is refused before anything else
    meta = runfiles.meta(path)  # typed: shapes within limits, the normalization a record
    cfg = config.load(path / "config.yaml")
    data = meta.data or runfiles.DataRecord()
    shape, names = data.input_shape, data.class_names
    if not shape or not names:
        info = dataset_info(cfg.data.dataset, cfg.data.params)
        shape, names = shape or info.input_shape, names or info.class_names
    h, w, c = (int(v) for v in shape)
    norm = data.normalization.model_dump() if data.normalization else None
    if norm and len(norm["mean"]) != c:
        raise UserError(
            f"{path / 'meta.json'}: 'data.normalization' has {len(norm['mean'])} channel(s), "
            f"the input {c}"
        )
    if not norm:
        try:
            norm = normalization.identity_stats(cfg.data.normalize, c)
        except UserError as exc:
            raise UserError(f"{path / 'meta.json'}: {exc}") from None
    return RunSpec(path, cfg, (h, w, c), tuple(str(n) for n in names), dict(norm),
                   int(cfg.data.batch_size))  # fmt: skip


def load_model(path: str | Path) -> Any:
    """Load a .keras file in safe mode (no arbitrary code); a bad file is the user's error."""
    import keras

    from dlintro import schedules  # noqa: F401  (registers the custom schedules)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        msg = " ".join(str(exc).split())
        if "safe_mode" in msg or "arbitrary code" in msg:
            msg = (
                "it asks to run arbitrary Python code (such as a Lambda layer), which Keras "
                "safe_mode refuses; only load models you made with dlintro"
            )
        raise UserError(f"{path}: not a loadable Keras model: {msg[:200]}") from None
