"""The oneDNN switch: the decision rule on given timings, what wins over measuring, the cache,
the recorded switch of a resumed run, and one real probe. Decisions are made in fresh
processes, as the CLI makes them (before TensorFlow is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlintro import onednn, tune, tunecache

FAST_ON = {"on": {"conv": 10.0, "dense": 2.0}, "off": {"conv": 20.0, "dense": 2.0}}


def _decide(tmp_path: Path, env: dict[str, str], recorded: object = None) -> dict:
    """decide() in a fresh process with the cache under tmp_path; its record and the
    environment variable it left."""
    code = (
        "import json, os, sys; from dlintro import onednn; "
        f"s = onednn.decide({recorded!r}); "
        "print(json.dumps({**s.to_dict(), 'env': os.environ.get(onednn.ENV)}))"
    )
    base = {k: v for k, v in os.environ.items() if k not in (onednn.ENV, "DLINTRO_TUNE")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, "XDG_CACHE_HOME": str(tmp_path), **env},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def _tf_default_on() -> bool:
    return any(f in tune.cpu_facts()["flags"] for f in onednn.DEFAULT_ON_FLAGS)


def test_rule_takes_onednn_only_when_it_is_faster_on_average() -> None:
    assert onednn.choose_by(FAST_ON)  # conv twice as fast, dense the same: mean 0.75
    slower = {"on": {"conv": 19.5, "dense": 2.2}, "off": {"conv": 20.0, "dense": 2.0}}
    assert not onednn.choose_by(slower)
    marginal = {"on": {"conv": 9.8, "dense": 1.0}, "off": {"conv": 10.0, "dense": 1.0}}
    assert not onednn.choose_by(marginal)  # 1% is not worth changing the kernels
    assert not onednn.choose_by({"on": {}, "off": {}})


def test_line_names_the_setting_the_reason_and_the_figures() -> None:
    line = onednn.Switch(True, "measured", FAST_ON).line()
    assert line == (
        "oneDNN on (measured: conv step 10.0 ms on, 20.0 off; matmul step 2.0 ms on, 2.0 off)"
    )
    assert onednn.Switch(None, "off").shown() == []
    assert onednn.Switch(False, "environment").line() == "oneDNN off (TF_ENABLE_ONEDNN_OPTS set)"


def test_environment_and_tuning_off_are_never_probed(tmp_path: Path) -> None:
    got = _decide(tmp_path, {onednn.ENV: "0"})
    assert (got["enabled"], got["source"], got["env"]) == (False, "environment", "0")
    got = _decide(tmp_path, {"DLINTRO_TUNE": "off"})
    assert (got["enabled"], got["source"], got["env"]) == (None, "off", None)
    assert not (tmp_path / "dlintro" / "onednn.json").exists()


def test_a_resumed_run_keeps_its_recorded_switch(tmp_path: Path) -> None:
    got = _decide(tmp_path, {}, {"enabled": True, "source": "measured", "timings": FAST_ON})
    assert (got["enabled"], got["source"], got["env"]) == (True, "resumed", "1")
    assert got["timings"] == FAST_ON
    assert onednn.Switch.from_dict({"enabled": "yes"}) is None
    assert onednn.Switch.from_dict([1]) is None


def test_cached_timings_decide_without_measuring(tmp_path: Path) -> None:
    key = tunecache.cache_key(onednn.facts())
    cache = tmp_path / "dlintro" / "onednn.json"
    cache.parent.mkdir(parents=True)
    slow_on = {"on": {"conv": 30.0, "dense": 3.0}, "off": {"conv": 20.0, "dense": 2.0}}
    cache.write_text(json.dumps({key: slow_on}))
    got = _decide(tmp_path, {})
    if _tf_default_on():  # TensorFlow turns oneDNN on itself here; bfloat16 needs it
        assert (got["enabled"], got["source"], got["env"]) == (None, "tensorflow", None)
    else:
        assert (got["enabled"], got["source"], got["env"]) == (False, "cache", "0")
        assert got["timings"] == slow_on
        cache.write_text(json.dumps({key: FAST_ON, "other": {}}))
        got = _decide(tmp_path, {})
        assert (got["enabled"], got["source"], got["env"]) == (True, "cache", "1")


@pytest.mark.slow
def test_the_probe_measures_both_settings_in_child_processes() -> None:
    timings = onednn.measure(rounds=2)
    assert set(timings) == {"on", "off"}
    for setting in timings.values():
        assert set(setting) == {"conv", "dense"}
        assert all(0 < ms < 10_000 for ms in setting.values())


def test_train_decides_the_switch_before_anything_imports_tensorflow(tmp_path: Path) -> None:
    """A real `dlintro train` process records the cached decision: had the config's checks
    imported TensorFlow first, the switch would come too late and meta.json would say "off"."""
    key = tunecache.cache_key(onednn.facts())
    (tmp_path / "dlintro").mkdir()
    (tmp_path / "dlintro" / "onednn.json").write_text(json.dumps({key: FAST_ON}))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\n"
        "data: {dataset: synthetic, params: {num_train: 32, num_test: 16}, batch_size: 16}\n"
        "model: {name: mlp, params: {hidden: [8]}}\n"
        "train: {steps: 1, jit_compile: false, precision: float32, steps_per_execution: 1}\n"
    )  # explicit execution settings: nothing else is probed
    base = {k: v for k, v in os.environ.items() if k not in (onednn.ENV, "DLINTRO_TUNE")}
    done = subprocess.run(
        [sys.executable, "-m", "dlintro", "train", str(config), "--run-dir", str(tmp_path / "run")],
        env={**base, "XDG_CACHE_HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "run" / "meta.json").read_text())["onednn"]
    if _tf_default_on():
        assert (recorded["enabled"], recorded["source"]) == (None, "tensorflow")
    else:
        assert (recorded["enabled"], recorded["source"]) == (True, "cache")
        assert "oneDNN on (cache: conv step 10.0 ms on, 20.0 off" in done.stdout
