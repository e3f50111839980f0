"""Runs at a glance: a summary of every run directory under a root (`dlintro runs`), and two runs
side by side (`dlintro compare`). Reads meta.json, metrics.json, history.csv and config.yaml;
no TensorFlow.

A run's status is meta.json's (running, finished, failed, interrupted), except that a "running"
run whose process is gone from this machine is "interrupted (killed)": it was killed without a
chance to record that (SIGKILL, a crash of the machine, out of memory). A run that is not
finished shows the step it can resume from: its last checkpoint's, or its last epoch's. A run
whose files are damaged is listed as "damaged", with the file and key.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from dlintro import runfiles, runs
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
    """One run as a flat dict of json-able values (None where unknown). Its files are read
    through their schemas (dlintro.runfiles): a damaged one is a UserError naming it."""
    path = runs.open_run(run_dir)
    raw = runs.read_meta(path)
    meta = runfiles.check(path / "meta.json", raw, runfiles.Meta)
    metrics = runfiles.metrics(path) or runfiles.Metrics()
    history = runs.read_history(path)
    vals = [(v, r) for r in history if (v := _num(r.get("val_accuracy"))) is not None]
    best = max(vals, key=lambda t: t[0], default=None)
    last = history[-1] if history else {}
    shown = status(raw)
    started = runs.timestamp(meta.started)
    wall = _num(meta.wall_seconds)
    if wall is None and started is not None:
        if shown == "running":
            wall = time.time() - started
        elif (ended := runs.timestamp(meta.ended)) is not None:
            wall = ended - started
    steps = meta.steps if shown == "finished" else None
    if steps is None:  # not finished: the last epoch that completed, or a later checkpoint
        saved = runfiles.checkpoint_dirs(path / "checkpoints")
        steps = max(int(_num(last.get("step")) or 0), saved[-1][0] if saved else 0)
    model, data = meta.model or runfiles.ModelRecord(), meta.data or runfiles.DataRecord()
    accuracy = metrics.accuracy if metrics.accuracy is not None else meta.test_accuracy
    loss = metrics.loss if metrics.loss is not None else meta.test_loss
    return {
        "name": path.name,
        "path": str(path),
        "status": shown,
        "model": model.name,
        "dataset": data.dataset,
        "params": model.params,
        "test_accuracy": _num(accuracy),
        "test_loss": _num(loss),
        "best_val_accuracy": best[0] if best else None,
        "best_val_epoch": int(_num(best[1].get("epoch")) or 0) if best else None,
        "final_train_loss": _num(last.get("loss")),
        "final_train_accuracy": _num(last.get("accuracy")),
        "steps": steps,
        "total_steps": meta.plan.total_steps if meta.plan else None,
        "epochs": int(_num(last.get("epoch")) or 0) if last else 0,
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "train_seconds": _num(meta.train_seconds),
        "images_per_second": _num(meta.images_per_second),
        "started": meta.started,
    }


DAMAGED = "damaged"


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run directory directly under `root`, oldest first. A run whose files are damaged
    is listed with status "damaged" and `damage` saying which file and key, and the others are
    listed as usual."""
    base = Path(root) if root is not None else runs.default_root()
    if not base.is_dir():
        raise UserError(f"{base}: no such runs directory (runs are written to ./runs by default)")
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if not (d / "meta.json").exists() or not (d / "config.yaml").exists():
            continue
        try:
            out.append(summarize(d))
        except UserError as exc:
            why = str(exc).removeprefix(f"{d}/").removeprefix(f"{d}: ")
            out.append({"name": d.name, "path": str(d), "status": DAMAGED, "damage": why})
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


def compare(*run_dirs: str | Path) -> dict[str, Any]:
    """Two or more runs: the config keys in which any differs from the first (config.diff) and
    their metrics side by side.

    `runs` holds each run's summary, and every config difference and metric its `values`, one
    per run in the order given; `a` and `b` are the first two of each (what scripts read when
    compare took exactly two runs).
    """
    from dlintro import config

    if len(run_dirs) < 2:
        raise UserError("compare: give two or more run directories")
    summaries = [summarize(r) for r in run_dirs]
    cfgs = [config.load(Path(r) / "config.yaml", check_names=False) for r in run_dirs]
    first: dict[str, Any] = {}  # key -> the first run's value, in the order keys are found
    changed: list[dict[str, Any]] = []
    for cfg in cfgs[1:]:
        changes = {}
        for key, old, new in config.diff(cfgs[0], cfg):
            first.setdefault(key, old)
            changes[key] = new
        changed.append(changes)
    diff = []
    for key, value in first.items():
        values = [value, *(c.get(key, value) for c in changed)]
        diff.append({"key": key, "a": values[0], "b": values[1], "values": values})
    metrics = []
    for key, name in COMPARED:
        values = [s.get(key) for s in summaries]
        metrics.append(
            {"metric": key, "name": name, "a": values[0], "b": values[1], "values": values}
        )
    return {
        "runs": summaries,
        "a": summaries[0],
        "b": summaries[1],
        "config_diff": diff,
        "metrics": metrics,
    }


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
