"""Refactoring guard: two small configs train to the weights recorded before the house
reorganisation (issue 15). On the CPU kind they were recorded on, the SHA-256 of the final
weights must match exactly; on any CPU, every variable's sum and norm must match to 1e-3
(other kernels change the last bits, never a recipe's result).

The two runs train in a fresh process: process-wide TensorFlow state that other tests leave
behind (op determinism, for one) changes the last bits of later runs.

Record again only when a change is *meant* to change training: `python
tests/test_fingerprints.py --record` (adds this machine's kind to the file).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import synthetic_config

RECORD = Path(__file__).with_name("fingerprints.json")

# What the weights were recorded with (the defaults then; `auto` would measure).
EXECUTION = {"jit_compile": False, "precision": "float32", "steps_per_execution": 1}

CONFIGS: dict[str, dict[str, Any]] = {
    # One device, nothing to augment: the rows feed; Adam, decay, validation, label smoothing.
    "rows_conv": synthetic_config(
        "fp_rows", seed=11, num_train=240, num_test=40, batch_size=24,
        data={"validation_split": 0.1},
        optimizer={"name": "adam", "learning_rate": 0.003},
        schedule={"name": "exponential_decay", "params": {"min_lr": 1e-4, "decay_steps": 20}},
        train={"epochs": 2, "label_smoothing": 0.1, "log_every": 5, **EXECUTION},
    ),
    # Augmented stream: SGD with momentum, L2, dropout, mixup, a cosine schedule.
    "stream_mlp": synthetic_config(
        "fp_stream", seed=5, num_train=200, num_test=40, batch_size=20,
        model={"name": "mlp", "params": {"hidden": [64, 32], "dropout": 0.2}},
        data={"augment": [{"name": "random_crop", "params": {"padding": 2}},
                          {"name": "mixup", "params": {"alpha": 0.2}}]},
        optimizer={"name": "sgd", "learning_rate": 0.05, "params": {"momentum": 0.9}},
        schedule={"name": "cosine"},
        train={"steps": 25, "l2": 1e-4, "log_every": 5, **EXECUTION},
    ),
}  # fmt: skip


def cpu_kind() -> str:
    """What decides which float kernels run: architecture, kind of CPU, TF version."""
    import tensorflow as tf

    from dlintro import tune

    return f"{platform.machine()}-{tune.cpu_kind(tune.cpu_facts()['flags'])}-tf{tf.__version__}"


def train_config(name: str, tmp: Path) -> dict[str, Any]:
    from dlintro import config, train

    cfg = config.load(data=CONFIGS[name])
    result = train.run(cfg, run_dir=tmp / name)
    import keras

    model = keras.saving.load_model(result.run_dir / "model.keras", compile=False)
    stats = [[float(np.sum(w, dtype=np.float64)), float(np.linalg.norm(w))]
             for w in model.get_weights()]  # fmt: skip
    return {"sha256": result.fingerprint, "stats": stats}


def train_all() -> dict[str, Any]:
    """Both configs' results and this machine's CPU kind (in this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: train_config(name, Path(tmp)) for name in sorted(CONFIGS)}
    return {"kind": cpu_kind(), "runs": out}


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    """train_all() in a fresh Python process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, __file__, "--print"], capture_output=True, text=True, env=env,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_weights_as_recorded(name: str, fresh: dict[str, Any]) -> None:
    recorded = json.loads(RECORD.read_text())[name]
    got = fresh["runs"][name]
    want = recorded["stats"]
    assert len(got["stats"]) == len(want)
    np.testing.assert_allclose(np.array(got["stats"]), np.array(want), rtol=1e-3, atol=1e-4)
    if fresh["kind"] in recorded["sha256"]:
        assert got["sha256"] == recorded["sha256"][fresh["kind"]]


if __name__ == "__main__" and "--print" in sys.argv:
    print(json.dumps(train_all()))

if __name__ == "__main__" and "--record" in sys.argv:
    old = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    result = train_all()
    for key, got in result["runs"].items():
        entry = old.get(key, {"sha256": {}})
        entry["sha256"][result["kind"]] = got["sha256"]
        entry.setdefault("stats", got["stats"])
        old[key] = entry
    RECORD.write_text(json.dumps(old, indent=1) + "\n")
    print(f"recorded {sorted(CONFIGS)} for {result['kind']}")
