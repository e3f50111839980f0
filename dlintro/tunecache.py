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
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Entry:
    """What the cache holds for one key: the speeds (estimates included), which of them are
    scouts' estimates (the images each was taken on), and the largest probing budget (seconds)
    they were taken with (0 when the entry does not say: a longer run measures what it lacks)."""

    speeds: dict[Choice, float] = field(default_factory=dict)
    estimates: dict[Choice, int] = field(default_factory=dict)
    budget_seconds: float = 0.0


def lookup(key: str) -> Entry:
    """The entry under `key`, read once; an empty Entry when there is none or it is unreadable
    (a damaged row is skipped, a damaged file is an empty cache)."""
    entry = _read(cache_path()).get(key)
    if not isinstance(entry, dict):
        return Entry()
    speeds: dict[Choice, float] = {}
    estimates: dict[Choice, int] = {}
    rows = entry.get("trials", [])
    for row in rows if isinstance(rows, list) else []:
        with contextlib.suppress(TypeError, KeyError, ValueError, AttributeError):
            row = dict(row)
            ips, scouted = float(row.pop("images_per_second")), int(row.pop("scouted", 0))
            choice = Choice(**row)
            speeds[choice] = ips
            if scouted:
                estimates[choice] = scouted
    try:
        budget = float(entry.get("budget_seconds", 0.0))
    except (TypeError, ValueError):
        budget = 0.0
    return Entry(speeds, estimates, budget)


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
