"""The `auto` probe's measurements kept between runs: `<cache>/dlintro/tune.json`, one entry
per machine, TensorFlow version, model, batch and input path (the key), merged under a file lock
so that concurrent runs keep each other's rows. A missing or damaged file is an empty cache."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlintro.tune import BUDGET_MAX_SECONDS, Choice, trial_row


def cache_path() -> Path:
    """`$XDG_CACHE_HOME/dlintro/tune.json` (else ~/.cache/dlintro/tune.json)."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "dlintro" / "tune.json"


def cache_key(facts: dict[str, Any]) -> str:
    """A stable key for what decides the speeds (machine, versions, model, batch, input)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache, or a damaged one: measure again
    return data if isinstance(data, dict) else {}


def _rows(key: str) -> Iterator[tuple[Choice, float, int]]:
    entry = _read(cache_path()).get(key)
    for row in entry.get("trials", []) if isinstance(entry, dict) else []:
        with contextlib.suppress(TypeError, KeyError, ValueError, AttributeError):
            row = dict(row)
            ips, scouted = float(row.pop("images_per_second")), int(row.pop("scouted", 0))
            yield Choice(**row), ips, scouted


def cached(key: str) -> dict[Choice, float]:
    """The speeds stored under `key` ({} when none or unreadable), estimates included."""
    return {choice: ips for choice, ips, _ in _rows(key)}


def cached_estimates(key: str) -> dict[Choice, int]:
    """The stored speeds under `key` that are scouts' estimates: the images each was taken on."""
    return {choice: n for choice, _, n in _rows(key) if n}


def cached_budget(key: str) -> float:
    """The largest probing budget (seconds) the measurements under `key` were taken with; 0
    for an entry that does not say (so a longer run measures what it lacks)."""
    entry = _read(cache_path()).get(key)
    try:
        return float(entry.get("budget_seconds", 0.0)) if isinstance(entry, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


def store(
    key: str,
    facts: dict[str, Any],
    measured: dict[Choice, float],
    estimates: dict[Choice, int] | None = None,
    budget_seconds: float | None = None,
) -> None:
    """Merge `measured` into the cache under `key` (best effort: a read-only cache is skipped);
    `estimates` marks the scouted ones, `budget_seconds` is the probing budget they were taken
    with (None: `dlintro tune`, every option measured)."""
    path = cache_path()
    scouted = estimates or {}
    with contextlib.suppress(OSError), _locked(path):
        data = _read(path)
        rows = [trial_row(c, v, scouted.get(c, 0)) for c, v in measured.items()]
        old = data.get(key) if isinstance(data.get(key), dict) else {}
        spent = BUDGET_MAX_SECONDS * 1e3 if budget_seconds is None else budget_seconds
        with contextlib.suppress(TypeError, ValueError):
            spent = max(spent, float(old.get("budget_seconds", 0.0)))
        data[key] = {
            "facts": facts, "trials": rows, "budget_seconds": round(spent, 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }  # fmt: skip
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
