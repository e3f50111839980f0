"""The parts of scripts/benchmark.py that time whole processes: `dlintro train
configs/mnist_fast.yaml` from the command's start to its test accuracy and the same recipe the
plain Keras way (`benchmark.py --keras-baseline`, in a process of its own), the peak memory of
short training runs, and the CLI's start-up (`--help`, `summary` of every config).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from offline_data import offline_args, offline_config, plain_arrays  # scripts/offline_data.py

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = Path(__file__).with_name("benchmark.py")
FAST = "mnist_fast"
TARGET = 0.99


# Run from a small Python process: Linux keeps the parent's RSS high-water mark across
# fork + exec, so a child of this (large) process would report at least this one's peak.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
sys.stdout.write(proc.stdout.decode(errors="replace"))
print(json.dumps({"wall": wall, "peak_mb": peak, "code": proc.returncode}))
"""


def _run(argv: list[str], cwd: Path = ROOT) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, output) of one process, which must succeed."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv], cwd=cwd, capture_output=True, text=True
    )
    *lines, last = proc.stdout.rstrip("\n").split("\n")
    result = json.loads(last)
    text = "\n".join(lines)
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result['code']}:\n{text[-2000:]}")
    return result["wall"], result["peak_mb"], text


def _dlintro(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlintro", *args]


def time_to_accuracy(data_dir: Path | None, tmp: Path) -> dict:
    """`dlintro train configs/mnist_fast.yaml` from the command's start, and plain Keras."""
    run = tmp / "fast"
    wall, rss, _ = _run(
        _dlintro(
            "train", f"configs/{FAST}.yaml", "--run-dir", str(run), *offline_args(FAST, data_dir)
        )
    )
    metrics = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    result = {
        "config": FAST,
        "target": TARGET,
        "dlintro": {
            "wall_seconds": wall,
            "accuracy": metrics["accuracy"],
            "train_seconds": meta["train_seconds"],
            "peak_rss_mb": rss,
            "execution": meta.get("execution"),
        },
    }
    print(f"[time to accuracy] dlintro {wall:.1f} s, {metrics['accuracy']:.2%}", flush=True)
    argv = [sys.executable, str(BENCHMARK), "--keras-baseline", FAST]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    wall, rss, out = _run(argv)
    keras_result = json.loads(out.strip().splitlines()[-1])
    result["keras"] = {"wall_seconds": wall, "peak_rss_mb": rss, **keras_result}
    print(f"[time to accuracy] Keras fit {wall:.1f} s, {keras_result['accuracy']:.2%}", flush=True)
    return result


def keras_baseline(name: str, data_dir: Path | None) -> None:
    """Train config `name` the plain Keras way (model.fit on NumPy arrays); print JSON."""
    import keras

    from dlintro import models, optim

    cfg = offline_config(name, data_dir)
    info, a, prepare = plain_arrays(cfg, data_dir)
    keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg.model.name, info.input_shape, info.num_classes, cfg.model.params)
    steps_per_epoch = -(-len(a.x_train) // cfg.data.batch_size)
    epochs = cfg.train.epochs or -(-cfg.train.steps // steps_per_epoch)
    optimizer = optim.build(cfg.optimizer, cfg.schedule, epochs * steps_per_epoch, steps_per_epoch)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(
        prepare(a.x_train), a.y_train, batch_size=cfg.data.batch_size, epochs=epochs, verbose=0
    )
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(prepare(a.x_test), a.y_test, batch_size=1000, verbose=0)
    print(json.dumps({"accuracy": float(accuracy), "train_seconds": train_seconds}))


def peak_memory(names: list[str], data_dir: Path | None, tmp: Path) -> list[dict]:
    """Max RSS of `dlintro train CONFIG --steps N` (data loading and evaluation included)."""
    rows = []
    for name in names:
        run = tmp / f"mem-{name}"
        argv = _dlintro(
            "train", f"configs/{name}.yaml", "--steps", "200", "--run-dir", str(run),
            *offline_args(name, data_dir),
        )  # fmt: skip
        wall, rss, _ = _run(argv)
        limit = 2048 if name.startswith("mnist") else 3072
        rows.append({"config": name, "peak_rss_mb": rss, "limit_mb": limit, "wall_seconds": wall})
        print(f"[memory] {name}: {rss} MB (limit {limit} MB)", flush=True)
    return rows


def cli_times() -> dict:
    """`dlintro --help` (median of 5) and `dlintro summary` of every config (slowest)."""
    helps = sorted(_run(_dlintro("--help"))[0] for _ in range(5))
    summaries = {}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        summaries[path.stem] = _run(_dlintro("summary", str(path)))[0]
    slowest = max(summaries, key=summaries.get)
    print(
        f"[cli] --help {helps[2]:.2f} s; summary slowest {slowest} {summaries[slowest]:.1f} s",
        flush=True,
    )
    return {"help_seconds": helps[2], "summary_seconds": summaries, "summary_slowest": slowest}
