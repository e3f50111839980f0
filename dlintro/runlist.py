"""Runs at a glance: a summary of every run directory under a root (`dlintro runs`), and two runs
side by side (`dlintro compare`). Reads meta.json, metrics.json, history.csv and config.yaml;
no TensorFlow.

A run's status is meta.json's (running, finished, failed, interrupted), except that a "running"
run whose process is gone from this machine is "interrupted (killed)": it was killed without a
chance to record that (SIGKILL, a crash of the machine, out of memory).
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dlintro import runs
from dlintro.errors import UserError

KILLED = "interrupted (killed)"


def default_root() -> Path:
    """Where runs go unless told: $DLINTRO_RUNS_DIR, else ./runs (as runs.create does)."""
    return Path(os.environ.get("DLINTRO_RUNS_DIR") or runs.DEFAULT_ROOT)


def _timestamp(text: Any) -> float | None:
    """meta.json's ISO 8601 time ('%Y-%m-%dT%H:%M:%S%z') as a Unix time."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


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


def status(meta: dict[str, Any]) -> str:
    """The status to show: meta.json's, or KILLED for a running run whose process is gone."""
    state = str(meta.get("status") or "unknown")
    if state == "running":
        since = _timestamp(meta.get("started"))
        if process_alive(meta.get("pid"), meta.get("host"), since) is False:
            return KILLED
    return state


def _history(path: Path) -> list[dict[str, str]]:
    try:
        with (path / "history.csv").open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """One run as a flat dict of json-able values (None where unknown)."""
    path = runs.open_run(run_dir)
    meta = runs.read_meta(path)
    history = _history(path)
    metrics: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {}
    vals = [(v, r) for r in history if (v := _num(r.get("val_accuracy"))) is not None]
    best = max(vals, key=lambda t: t[0], default=None)
    last = history[-1] if history else {}
    plan = meta.get("plan") or {}
    shown = status(meta)
    started = _timestamp(meta.get("started"))
    wall = _num(meta.get("wall_seconds"))
    if wall is None and started is not None:
        if shown == "running":
            wall = time.time() - started
        elif (ended := _timestamp(meta.get("ended"))) is not None:
            wall = ended - started
    steps = meta.get("steps") if shown == "finished" else None
    if not isinstance(steps, int):  # not finished: the last epoch that completed
        steps = int(_num(last.get("step")) or 0)
    return {
        "name": path.name,
        "path": str(path),
        "status": shown,
        "model": (meta.get("model") or {}).get("name"),
        "dataset": (meta.get("data") or {}).get("dataset"),
        "params": (meta.get("model") or {}).get("params"),
        "test_accuracy": _num(metrics.get("accuracy", meta.get("test_accuracy"))),
        "test_loss": _num(metrics.get("loss", meta.get("test_loss"))),
        "best_val_accuracy": best[0] if best else None,
        "best_val_epoch": int(_num(best[1].get("epoch")) or 0) if best else None,
        "final_train_loss": _num(last.get("loss")),
        "final_train_accuracy": _num(last.get("accuracy")),
        "steps": steps,
        "total_steps": plan.get("total_steps"),
        "epochs": int(_num(last.get("epoch")) or 0) if last else 0,
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "train_seconds": _num(meta.get("train_seconds")),
        "images_per_second": _num(meta.get("images_per_second")),
        "started": meta.get("started"),
    }


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run directory directly under `root`, oldest first. A directory whose files are
    unreadable is listed with status 'unreadable: <why>'."""
    base = Path(root) if root is not None else default_root()
    if not base.is_dir():
        raise UserError(f"{base}: no such runs directory (runs are written to ./runs by default)")
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if not (d / "meta.json").is_file() or not (d / "config.yaml").is_file():
            continue
        try:
            out.append(summarize(d))
        except UserError as exc:
            why = str(exc).removeprefix(f"{d / 'meta.json'}: ")
            out.append({"name": d.name, "path": str(d), "status": f"unreadable: {why}"})
    return sorted(out, key=lambda r: (r.get("started") or "", r["name"]))


COMPARED = (
    ("test_accuracy", "test accuracy"),
    ("test_loss", "test loss"),
    ("best_val_accuracy", "best validation accuracy"),
    ("final_train_accuracy", "final training accuracy"),
    ("final_train_loss", "final training loss"),
    ("steps", "steps"),
    ("epochs", "epochs"),
    ("wall_seconds", "wall time (s)"),
    ("train_seconds", "training time (s)"),
    ("images_per_second", "images per second"),
    ("params", "parameters"),
)


def compare(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Two runs: their config differences (config.diff) and their metrics side by side."""
    from dlintro import config

    a, b = summarize(run_a), summarize(run_b)
    cfg_a = config.load(Path(run_a) / "config.yaml", check_names=False)
    cfg_b = config.load(Path(run_b) / "config.yaml", check_names=False)
    return {
        "a": a,
        "b": b,
        "config_diff": [{"key": k, "a": x, "b": y} for k, x, y in config.diff(cfg_a, cfg_b)],
        "metrics": [{"metric": key, "name": name, "a": a.get(key), "b": b.get(key)}
                    for key, name in COMPARED],
    }  # fmt: skip


def duration(seconds: float | None) -> str:
    """12.3 s, 4m05s, 2h07m; '-' when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"
