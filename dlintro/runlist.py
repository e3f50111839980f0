"""Runs at a glance: a summary of every run directory under a root (`dlintro runs`), and two runs
side by side (`dlintro compare`). Reads meta.json, metrics.json, history.csv and config.yaml;
no TensorFlow.

A run's status is meta.json's (running, finished, failed, interrupted), except that a "running"
run whose process is gone from this machine is "interrupted (killed)": it was killed without a
chance to record that (SIGKILL, a crash of the machine, out of memory).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from dlintro import runs
from dlintro.errors import UserError

KILLED = "interrupted (killed)"


def status(meta: dict[str, Any]) -> str:
    """The status to show: meta.json's, or KILLED for a running run whose process is gone."""
    state = str(meta.get("status") or "unknown")
    if state == "running" and runs.writer_alive(meta) is False:
        return KILLED
    return state


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
    history = runs.read_history(path)
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
    started = runs.timestamp(meta.get("started"))
    wall = _num(meta.get("wall_seconds"))
    if wall is None and started is not None:
        if shown == "running":
            wall = time.time() - started
        elif (ended := runs.timestamp(meta.get("ended"))) is not None:
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
    base = Path(root) if root is not None else runs.default_root()
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
