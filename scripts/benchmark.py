"""How fast dlintro trains, next to the plain Keras way, on this machine, in one run.

    python scripts/benchmark.py --data-dir ../shared/datasets                 # everything
    python scripts/benchmark.py --data-dir ../shared/datasets --update-readme # + README section
    python scripts/benchmark.py --only throughput --models mnist_softmax      # one part

Throughput (images per second in steady state, after warm-up): for each config below, the same
model (same builder, seed and batch size, same optimizer and schedule) is trained
  * by dlintro: the compiled step loop that `dlintro train` runs (StepRunner.run_steps on the
    training stream of uint8 images, in chunks of train.steps_per_execution, the config's XLA
    setting, its augmentations);
  * the plain Keras way: NumPy float32 arrays (x / 255, or standardized like the config) into
    `model.fit` with default settings (compile() defaults, loss
    "sparse_categorical_crossentropy", metrics ["accuracy"]), timed from the end of the 3rd
    batch to the end of the last one with a callback;
  * by dlintro on one batch already in memory (the input pipeline's cost is the difference);
  * by dlintro with one step per execution, and with the XLA setting flipped (what those
    choices are worth).
Rounds alternate between them (round 0 is warm-up and is not counted); the table gives medians.

Then, each in a fresh process: wall time from the command's start to the end of
`dlintro train configs/mnist_fast.yaml` and its test accuracy, the same model and recipe by the
plain Keras way, the peak memory (max RSS) of short `dlintro train` runs of every config above,
`dlintro --help`, and `dlintro summary` of every config in configs/.
Results go to results/benchmark.json and, with --update-readme, the README's performance section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline_data import data_overrides  # noqa: E402  (scripts/offline_data.py)

MODELS = [
    "mnist_softmax",
    "mnist_mlp5_relu_decay",
    "mnist_conv_big_dropout",
    "mnist_keras_cnn",
    "cifar10_keras_conv",
    "cifar10_resnet20",
]
FAST = "mnist_fast"
TARGET = 0.99
WARMUP_BATCHES = 3
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def load_config(name: str, data_dir: Path | None, extra: list[str] = ()) -> Any:
    from dlintro import config

    path = ROOT / "configs" / f"{name}.yaml"
    dataset = config.load(path).data.dataset
    return config.load(path, [*data_overrides(dataset, data_dir), *extra])


# ------------------------------------------------------------------------------ throughput


class Contender:
    """One way of training one model; `run(steps)` trains that many steps, returns seconds."""

    label = ""

    def run(self, steps: int) -> float:
        raise NotImplementedError


class Dlintro(Contender):
    """dlintro's own step loop, as `dlintro train` runs it (see Trainer._loop)."""

    def __init__(self, cfg: Any, data_dir: Path | None, label: str, in_memory: bool = False):
        import tensorflow as tf

        from dlintro.trainer import Trainer

        self.label, self.cfg = label, cfg
        self.session = Trainer(cfg, data_dir).build()
        self.spe = cfg.train.steps_per_execution
        self.feed, self.step = self.session.feed(0), 0
        self.batches: tuple | None = None
        if in_memory:  # one batch, ready for the model, as every row: no input work at all
            x, y = self.session.bundle.first_batch()
            self.session.runner.prepare = tf.identity  # before the step is first traced
            self.batches = tf.stack([x] * self.spe), tf.stack([y] * self.spe)

    def run(self, steps: int) -> float:
        """`steps` steps as the training loop runs them (Trainer._loop): chunks of
        steps_per_execution, cut at epoch ends, running metrics read after each."""
        runner, done = self.session.runner, 0
        per_epoch = self.session.bundle.steps_per_epoch
        start = time.perf_counter()
        while done < steps:
            n = min(self.spe, steps - done, per_epoch - self.step % per_epoch)
            if self.batches is not None:
                k = runner.run_rows(*self.batches, 0, n)
            else:
                k = self.feed.run(runner, self.step, self.feed.chunk(self.step, n))
            done, self.step = done + k, self.step + k
            runner.metrics()  # the loop reads the running metrics after every chunk
        return time.perf_counter() - start


class PlainKeras(Contender):
    """NumPy arrays into model.fit with default settings: the way the Keras examples train."""

    label = "Keras fit"

    def __init__(self, cfg: Any, data_dir: Path | None) -> None:
        import keras
        import numpy as np

        from dlintro import models, optim
        from dlintro.data import normalization
        from dlintro.data.sources import data_root, load_dataset

        info, arrays = load_dataset(cfg.data.dataset, data_root(data_dir), cfg.data.params)
        norm = normalization.compute(cfg.data.normalize, arrays.x_train)
        x = arrays.x_train.astype("float32")
        if norm["mode"] != "none":
            x /= 255.0
        x = (x - np.float32(norm["mean"])) / np.float32(norm["std"])
        self.x, self.y, self.batch = x.astype("float32"), arrays.y_train, cfg.data.batch_size
        keras.utils.set_random_seed(cfg.seed)
        self.model = models.build(
            cfg.model.name, info.input_shape, info.num_classes, cfg.model.params
        )
        steps_per_epoch = -(-len(x) // self.batch)
        optimizer = optim.build(cfg.optimizer, cfg.schedule, 10**6, steps_per_epoch)
        self.model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        self.offset = 0

        class Clock(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.ends: list[float] = []

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.ends.append(time.perf_counter())

        self.clock = Clock()

    def run(self, steps: int) -> float:
        n = (steps + WARMUP_BATCHES) * self.batch
        if self.offset + n > len(self.x):
            self.offset = 0
        part = slice(self.offset, self.offset + n)
        self.offset += n
        self.clock.ends = []
        self.model.fit(
            self.x[part], self.y[part], batch_size=self.batch, epochs=1, verbose=0,
            callbacks=[self.clock],
        )  # fmt: skip
        ends = self.clock.ends
        return (ends[-1] - ends[WARMUP_BATCHES - 1]) * steps / (len(ends) - WARMUP_BATCHES)


def throughput(names: list[str], data_dir: Path | None, rounds: int, seconds: float) -> list:
    """Median images/second of every contender of every config, rounds interleaved."""
    from dlintro.inspect import summarize

    rows = []
    for name in names:
        cfg = load_config(name, data_dir)
        jit = cfg.train.jit_compile
        flipped = "false" if jit is True else "true"
        spe1 = load_config(name, data_dir, ["train.steps_per_execution=1"])
        xla = load_config(name, data_dir, [f"train.jit_compile={flipped}"])
        print(f"[throughput] {name}: building ...", flush=True)
        contenders: list[Contender] = [
            PlainKeras(cfg, data_dir),
            Dlintro(cfg, data_dir, "dlintro"),
            Dlintro(cfg, data_dir, "dlintro, batch in memory", in_memory=True),
            Dlintro(spe1, data_dir, "dlintro, 1 step per execution"),
            Dlintro(xla, data_dir, f"dlintro, jit_compile {flipped}"),
        ]
        batch = cfg.data.batch_size
        # Warm-up (tracing, compiling), then a step count that takes about `seconds` each
        # (at least 3 steps: XLA-compiled convolutions can take seconds per step on a CPU).
        steps = {}
        for c in contenders:
            spe = getattr(c, "spe", 1)
            c.run(max(2, spe))
            per_step = c.run(max(3, spe)) / max(3, spe)
            s = max(3, min(5000, round(seconds / per_step)))
            steps[c.label] = max(spe, s // spe * spe) if s >= spe else s
        times: dict[str, list[float]] = {c.label: [] for c in contenders}
        for r in range(rounds + 1):  # round 0 is warm-up: not counted
            for c in contenders:
                s = steps[c.label]
                times[c.label].append(s * batch / c.run(s))
            print(
                f"[throughput] {name} round {r}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in times.items()),
                flush=True,
            )
        times = {k: v[1:] for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        macs = summarize(contenders[1].session.model).macs
        rows.append(
            {
                "config": name,
                "model": cfg.model.name,
                "batch_size": batch,
                "dataset": cfg.data.dataset,
                "steps_per_execution": cfg.train.steps_per_execution,
                "jit_compile": cfg.train.jit_compile,
                "augment": [a.name for a in cfg.data.augment or []],
                "images_per_second": med,
                "samples": times,
                # Ratios pair the measurements of one round (taken a few seconds apart), which
                # cancels most of this shared machine's drift; median and range over rounds.
                **_paired("ratio_vs_keras", times["dlintro"], times["Keras fit"]),
                "macs_per_image": macs,
                # Training costs about 3 forward passes (forward, input and weight gradients).
                "gflops_dlintro": 6 * macs * med["dlintro"] / 1e9,
                "gflops_keras": 6 * macs * med["Keras fit"] / 1e9,
                **_paired("pipeline_ratio", times["dlintro, batch in memory"], times["dlintro"]),
            }
        )
        del contenders
    return rows


def _paired(key: str, a: list[float], b: list[float]) -> dict[str, Any]:
    """{key: median of a[r] / b[r] over rounds r, key_range: [min, max]}."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {key: statistics.median(ratios), f"{key}_range": [min(ratios), max(ratios)]}


# ------------------------------------------------------------------------------ processes


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


def _data_args(name: str, data_dir: Path | None) -> list[str]:
    from dlintro import config

    dataset = config.load(ROOT / "configs" / f"{name}.yaml").data.dataset
    args = ["--data-dir", str(data_dir)] if data_dir else []
    for o in data_overrides(dataset, data_dir):
        args += ["--set", o]
    return args


def time_to_accuracy(data_dir: Path | None, tmp: Path) -> dict:
    """`dlintro train configs/mnist_fast.yaml` from the command's start, and plain Keras."""
    run = tmp / "fast"
    wall, rss, _ = _run(
        _dlintro(
            "train", f"configs/{FAST}.yaml", "--run-dir", str(run), *_data_args(FAST, data_dir)
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
        },
    }
    print(f"[time to accuracy] dlintro {wall:.1f} s, {metrics['accuracy']:.2%}", flush=True)
    argv = [sys.executable, __file__, "--keras-baseline", FAST]
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
    import numpy as np

    from dlintro import models, optim
    from dlintro.data import normalization
    from dlintro.data.sources import data_root, load_dataset

    cfg = load_config(name, data_dir)
    info, a = load_dataset(cfg.data.dataset, data_root(data_dir), cfg.data.params)
    norm = normalization.compute(cfg.data.normalize, a.x_train)

    def prepare(x: np.ndarray) -> np.ndarray:
        x = x.astype("float32") / (1.0 if norm["mode"] == "none" else 255.0)
        return ((x - np.float32(norm["mean"])) / np.float32(norm["std"])).astype("float32")

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
            *_data_args(name, data_dir),
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


# ------------------------------------------------------------------------------ report


def _span(row: dict, key: str) -> str:
    lo, hi = row.get(f"{key}_range", (row[key], row[key]))
    return f"({lo:.2f}-{hi:.2f})"


def render(result: dict) -> str:
    """The README's performance section (markdown) from a benchmark result."""
    m = result["machine"]
    lines = [
        f"Measured by `python scripts/benchmark.py --data-dir ../shared/datasets` on "
        f"{m['cpu']} ({m['cpu_count']} cores, no GPU), TensorFlow {m['tensorflow']}, "
        f"Keras {m['keras']}, {result['date']}. Images per second in steady state, medians of "
        f"{result['rounds']} interleaved rounds; the ratios are per round (dlintro against Keras "
        "measured seconds apart), median and (range):",
        "",
        "| config | batch | Keras fit | dlintro | ratio | in-memory batch / dlintro | "
        "1 step per execution | XLA flipped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.get("throughput", []):
        ips = row["images_per_second"]
        flipped = next(k for k in ips if k.startswith("dlintro, jit_compile"))
        lines.append(
            f"| {row['config']} | {row['batch_size']} | {ips['Keras fit']:,.0f} | "
            f"{ips['dlintro']:,.0f} | **{row['ratio_vs_keras']:.2f}x** "
            f"{_span(row, 'ratio_vs_keras')} | {row['pipeline_ratio']:.2f} "
            f"{_span(row, 'pipeline_ratio')} | {ips['dlintro, 1 step per execution']:,.0f} | "
            f"{ips[flipped]:,.0f} ({flipped.split()[-1]}) |"
        )
    tta = result.get("time_to_accuracy")
    if tta:
        d, k = tta["dlintro"], tta["keras"]
        lines += [
            "",
            f"`dlintro train configs/{tta['config']}.yaml`: **{d['accuracy']:.2%}** test accuracy "
            f"**{d['wall_seconds']:.1f} s** after the command started (training "
            f"{d['train_seconds']:.1f} s; peak memory {d['peak_rss_mb']} MB). The same model and "
            f"recipe the plain Keras way: {k['accuracy']:.2%} in {k['wall_seconds']:.1f} s "
            f"(ratio {k['wall_seconds'] / d['wall_seconds']:.2f}x).",
        ]
    mem = result.get("memory")
    if mem:
        lines += [
            "",
            "Peak memory (max RSS) of `dlintro train CONFIG --steps 200`: "
            + ", ".join(f"{r['config']} {r['peak_rss_mb']:,} MB" for r in mem)
            + " (limits: MNIST 2,048 MB, CIFAR-10 3,072 MB).",
        ]
    cli = result.get("cli")
    if cli:
        slow = cli["summary_slowest"]
        lines += [
            "",
            f"`dlintro --help`: {cli['help_seconds']:.2f} s. `dlintro summary`: at most "
            f"{cli['summary_seconds'][slow]:.1f} s over all {len(cli['summary_seconds'])} configs "
            f"(slowest: {slow}).",
        ]
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    body = readme.read_text()
    start, end = MARKERS
    if start not in body or end not in body:
        raise SystemExit(f"README.md lacks the markers {start} ... {end}")
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def machine() -> dict:
    import platform

    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DLINTRO_DATA_DIR"))
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--only", choices=["throughput", "accuracy", "memory", "cli"], action="append"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark.json")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="README from --out")
    parser.add_argument("--keras-baseline", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve() if args.data_dir else None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keras_baseline:
        keras_baseline(args.keras_baseline, data_dir)
        return
    if args.render_only:
        result = json.loads(args.out.read_text())
    else:
        parts = set(args.only or ["throughput", "accuracy", "memory", "cli"])
        result = {}
        if args.only and args.out.exists():  # a partial run updates the other parts' file
            result = json.loads(args.out.read_text())
        result |= {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
        if "throughput" in parts:
            result["rounds"] = args.rounds
        with tempfile.TemporaryDirectory(prefix="dlintro-bench-") as tmp:
            if "throughput" in parts:
                result["throughput"] = throughput(args.models, data_dir, args.rounds, args.seconds)
            if "accuracy" in parts:
                result["time_to_accuracy"] = time_to_accuracy(data_dir, Path(tmp))
            if "memory" in parts:
                result["memory"] = peak_memory(args.models, data_dir, Path(tmp))
            if "cli" in parts:
                result["cli"] = cli_times()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(render(result))
    if args.update_readme:
        update_readme(render(result))
        print("updated README.md")


if __name__ == "__main__":
    main()
