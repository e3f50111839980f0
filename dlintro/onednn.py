"""TensorFlow's oneDNN switch (`TF_ENABLE_ONEDNN_OPTS`), chosen by measurement on the machine.

TensorFlow turns oneDNN on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on
others (an AVX2-only AMD EPYC, say) it runs Eigen kernels, and there oneDNN trained the
ladder's convnets 1.2-1.5x faster (measured on such an EPYC). The switch is read once, when
TensorFlow is first imported, so it is decided before that, per machine rather than per model:
two child processes, one with the switch off and one with it on, time a small convolution
training step and a matrix-product training step; oneDNN is used when it makes them faster on
average. The result is cached per CPU and TensorFlow version (`<cache>/dlintro/onednn.json`),
so only the first run on a machine pays the few seconds. On CPUs where TensorFlow turns oneDNN on by
itself the default stays (bfloat16 needs it there). An explicit `TF_ENABLE_ONEDNN_OPTS` in the
environment always wins and is never probed; `DLINTRO_TUNE=off` keeps TensorFlow's default.
No TensorFlow in this module outside the probe child (`python -m dlintro.onednn`).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from dlintro import tune, tunecache

ENV = "TF_ENABLE_ONEDNN_OPTS"
DEFAULT_ON_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
KERNELS = ("conv", "dense")
GAIN = 0.95  # oneDNN on only when it takes at most 95% of the time (mean over the kernels)
PROBE_TIMEOUT = 120.0
ROUNDS = 7


@dataclass(frozen=True)
class Switch:
    """Whether oneDNN is on and why: `source` is "environment" (set by the user), "measured",
    "cache", "resumed", "tensorflow" (TensorFlow's own default for this CPU) or "off" (tuning
    off, or TensorFlow already imported). `timings`: milliseconds per step, by setting and
    kernel, when measured."""

    enabled: bool | None  # None: TensorFlow's default, not set
    source: str
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def line(self) -> str:
        """e.g. 'oneDNN on (measured: conv step 9.1 ms, off 14.2; matmul step 3.0 ms, off 2.9)'."""
        state = {True: "on", False: "off", None: "TensorFlow's default"}[self.enabled]
        why = {
            "environment": f"{ENV} set",
            "resumed": "as the run started",
            "tensorflow": "TensorFlow turns it on for this CPU",
            "off": "not measured",
        }.get(self.source, self.source)
        on, off = self.timings.get("on", {}), self.timings.get("off", {})
        if on and off:
            names = {"conv": "conv step", "dense": "matmul step"}
            figures = "; ".join(
                f"{names[k]} {on[k]:.1f} ms on, {off[k]:.1f} off" for k in KERNELS if k in on
            )
            why = f"{why}: {figures}"
        return f"oneDNN {state} ({why})"

    def shown(self) -> list[str]:
        """The start line's oneDNN line, or none when nothing was decided."""
        return [] if self.source == "off" else [self.line()]

    def to_dict(self) -> dict[str, Any]:
        """The record written to meta.json."""
        return asdict(self)

    @staticmethod
    def from_dict(data: Any) -> Switch | None:
        """A recorded switch, or None when `data` is not one."""
        if not isinstance(data, dict) or data.get("enabled") not in (True, False, None):
            return None
        timings = data.get("timings")
        return Switch(data["enabled"], "resumed", timings if isinstance(timings, dict) else {})


def choose_by(timings: dict[str, dict[str, float]]) -> bool:
    """oneDNN on when the mean of its per-kernel time ratios (on / off) is at most GAIN."""
    on, off = timings["on"], timings["off"]
    ratios = [on[k] / off[k] for k in KERNELS if on.get(k) and off.get(k)]
    return bool(ratios) and statistics.mean(ratios) <= GAIN


def facts() -> dict[str, Any]:
    """What the decision depends on: the CPU and TensorFlow's version."""
    try:
        version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        version = "none"
    return {"cpu": tune.cpu_facts(), "tensorflow": version}


def _cache_path() -> Any:
    return tunecache.cache_path().with_name("onednn.json")


def _cached(key: str) -> dict[str, dict[str, float]] | None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        entry = json.loads(_cache_path().read_text())[key]
        timings = {s: {k: float(entry[s][k]) for k in KERNELS} for s in ("on", "off")}
        return timings
    return None


def _store(key: str, timings: dict[str, dict[str, float]]) -> None:
    path = _cache_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        data[key] = {**timings, "facts": facts(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)


def measure(rounds: int = ROUNDS) -> dict[str, dict[str, float]]:
    """Milliseconds per training step of each kernel with oneDNN off and on: two child
    processes, measured in alternating rounds (one waits while the other measures, so that
    both see the same machine); medians over the rounds."""
    children = {}
    try:
        for setting, value in (("off", "0"), ("on", "1")):
            env = {**os.environ, ENV: value, "TF_CPP_MIN_LOG_LEVEL": "3"}
            children[setting] = subprocess.Popen(
                [sys.executable, "-m", "dlintro.onednn"], env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + PROBE_TIMEOUT
        samples: dict[str, list[dict[str, float]]] = {s: [] for s in children}
        for child in children.values():
            _ask(child, "ready", deadline)
        for _ in range(rounds):
            for setting, child in children.items():
                samples[setting].append(json.loads(_ask(child, "measure", deadline)))
    finally:
        for child in children.values():
            with contextlib.suppress(OSError, ValueError):
                child.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.SubprocessError):
                child.wait(timeout=10)
            if child.poll() is None:
                child.kill()
    return {
        s: {k: round(statistics.median(r[k] for r in rows), 3) for k in KERNELS}
        for s, rows in samples.items()
    }


def _ask(child: subprocess.Popen, command: str, deadline: float) -> str:
    """Send one command line to a probe child and read its one-line answer."""
    if time.monotonic() > deadline:
        raise subprocess.TimeoutExpired("dlintro.onednn", PROBE_TIMEOUT)
    if command != "ready":
        child.stdin.write(command + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
    line = child.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise OSError("the oneDNN probe ended early")
    return line.strip()


def decide(recorded: Any = None) -> Switch:
    """The switch for this process: the environment's, the recorded one (a resumed run), TF's
    default where it turns oneDNN on itself, else measured (or cached). Sets the environment."""
    if ENV in os.environ:
        return Switch(os.environ[ENV].strip() not in ("0", "false", "False", ""), "environment")
    previous = Switch.from_dict(recorded) if recorded is not None else None
    if previous is not None:
        return apply(previous)
    if "tensorflow" in sys.modules or tune.measuring_off():
        return Switch(None, "off")
    if any(f in tune.cpu_facts()["flags"] for f in DEFAULT_ON_FLAGS):
        return Switch(None, "tensorflow")
    key = tunecache.cache_key(facts())
    timings, source = _cached(key), "cache"
    if timings is None:
        try:
            timings, source = measure(), "measured"
        except (OSError, ValueError, subprocess.SubprocessError):
            return Switch(None, "off")  # no measurement: TensorFlow's default
        _store(key, timings)
    return apply(Switch(choose_by(timings), source, timings))


def apply(switch: Switch) -> Switch:
    """Set the environment for the switch (before TensorFlow is imported)."""
    if switch.enabled is not None and "tensorflow" not in sys.modules:
        os.environ[ENV] = "1" if switch.enabled else "0"
    return switch


_current: Switch | None = None


def prepare(recorded: Any = None) -> Switch:
    """Decide once per process (the CLI calls this before importing TensorFlow)."""
    global _current
    if _current is None:
        _current = decide(recorded)
    return _current


def current() -> Switch:
    """The switch this process runs with (what `prepare` decided, else what the environment
    says)."""
    if _current is not None:
        return _current
    if ENV in os.environ:
        return Switch(os.environ[ENV].strip() not in ("0", "false", "False", ""), "environment")
    return Switch(None, "off")


def _probe() -> None:
    """Child process: build the two kernels' training steps, say "ready", then answer each
    "measure" line with {"conv": ms, "dense": ms} (best of 3 short windows)."""
    import tensorflow as tf

    tf.random.set_seed(0)
    shapes = {
        "conv": ([64, 28, 28, 16], [3, 3, 16, 32]),  # a convnet's middle layer, batch 64
        "dense": ([128, 784], [784, 512]),  # an MLP's first layer, batch 128
    }
    steps = {}
    for name, (x_shape, w_shape) in shapes.items():
        x = tf.random.normal(x_shape)
        w = tf.Variable(tf.random.normal(w_shape, stddev=0.05))

        @tf.function
        def step(x: Any, w: Any = w, conv: bool = name == "conv") -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)  # the input's gradient too, as in a middle layer
                y = tf.nn.conv2d(x, w, 1, "SAME") if conv else tf.matmul(x, w)
                loss = tf.reduce_mean(tf.nn.relu(y))
            grad = tape.gradient(loss, [w, x])
            w.assign_sub(0.01 * grad[0])
            return grad[1]

        for _ in range(3):
            step(x).numpy()
        steps[name] = (step, x)
    print("ready", flush=True)
    for _ in sys.stdin:
        result = {}
        for name, (step, x) in steps.items():
            times = []
            for _ in range(3):
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < 0.05:
                    step(x).numpy()
                    n += 1
                times.append((time.perf_counter() - start) / n * 1000)
            result[name] = min(times)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _probe()
