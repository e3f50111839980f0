"""How fast dlintro trains, next to the plain Keras way, on this machine, in one run.

    python scripts/benchmark.py --data-dir ../shared/datasets                 # everything
    python scripts/benchmark.py --data-dir ../shared/datasets --update-readme # + README section
    python scripts/benchmark.py --only throughput --models mnist_softmax      # one part

First the machine's own peak: a large float32 and bfloat16 matrix product and 3x3 convolution
(scripts/bench_parts.py). Then throughput (images per second in steady state, after warm-up):
for each config below, the same model (same builder, seed and batch size, same optimizer and
schedule, the same images: scripts/offline_data.py decides how a config's dataset is read
offline, for both sides) is trained
  * by dlintro as shipped: `Trainer(cfg).build()` chooses the `auto` execution settings (XLA,
    precision, steps per call) by measurement, before any timing; then the step loop that
    `dlintro train` runs (chunks of steps per call on its feed, cut at epoch ends);
  * the plain Keras way: NumPy float32 arrays (normalized like the config) into `model.fit`
    with default settings (float32, compile() defaults, loss "sparse_categorical_crossentropy",
    metrics ["accuracy"]), timed from the end of the 3rd batch to the end of the last one;
  * by dlintro, with the same settings, on one batch already in memory (the input pipeline's
    cost is the difference).
Rounds alternate between them (round 0 is warm-up and is not counted); the table gives medians,
each row's `auto` decision, and its achieved GFLOP/s (6 x MACs per image x images/s) as a share
of the peak of the precision it ran in. The `auto` decisions are made afresh (an empty tuning
cache, like a first run; --user-tune-cache keeps ~/.cache/dlintro/tune.json).

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# scripts/bench_parts.py, bench_processes.py and offline_data.py
from bench_parts import fraction_of_peak, gflops, measure_peak, render, update_readme  # noqa: E402
from bench_processes import cli_times, keras_baseline, peak_memory, time_to_accuracy  # noqa: E402
from offline_data import offline_config, plain_arrays  # noqa: E402

MODELS = [
    "mnist_softmax",
    "mnist_mlp5_relu_decay",
    "mnist_conv_big_dropout",
    "mnist_keras_cnn",
    "cifar10_keras_conv",
    "cifar10_resnet20",
]
WARMUP_BATCHES = 3
KERAS, DLINTRO, IN_MEMORY = "Keras fit", "dlintro", "dlintro, batch in memory"


# ------------------------------------------------------------------------------ throughput


class Contender:
    """One way of training one model; `run(steps)` trains that many steps, returns seconds."""

    label = ""
    spe = 1  # steps per call: step counts are multiples of it
    precision = "float32"

    def run(self, steps: int) -> float:
        raise NotImplementedError


def _policy(precision: str) -> None:
    """The process-wide precision policy a contender was built under (they alternate)."""
    import keras

    keras.mixed_precision.set_global_policy(precision)


class Dlintro(Contender):
    """dlintro's own step loop, as `dlintro train` runs it (see Trainer._loop)."""

    def __init__(self, cfg: Any, data_dir: Path | None, label: str, in_memory: bool = False):
        import tensorflow as tf

        from dlintro.trainer import Trainer

        self.label = label
        self.session = Trainer(cfg, data_dir).build()  # `auto` is decided here
        train = self.session.run_cfg.train
        self.spe, self.precision = train.steps_per_execution, train.precision
        self.decision = self.session.decision
        self.feed, self.step = self.session.feed(0), 0
        self.batches: tuple | None = None
        if in_memory:  # one batch, ready for the model, as every row: no input work at all
            x, y = self.session.bundle.first_batch()
            self.session.runner.prepare = tf.identity  # before the step is first traced
            self.batches = tf.stack([x] * self.spe), tf.stack([y] * self.spe)

    def run(self, steps: int) -> float:
        """`steps` steps as the training loop runs them (Trainer._loop): chunks of
        steps_per_execution, cut at epoch ends, running metrics read after each."""
        _policy(self.precision)
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

    label = KERAS

    def __init__(self, cfg: Any, data_dir: Path | None) -> None:
        import keras

        from dlintro import models, optim

        _policy("float32")
        info, arrays, prepare = plain_arrays(cfg, data_dir)
        self.x, self.y, self.batch = prepare(arrays.x_train), arrays.y_train, cfg.data.batch_size
        keras.utils.set_random_seed(cfg.seed)
        self.model = models.build(
            cfg.model.name, info.input_shape, info.num_classes, cfg.model.params
        )
        steps_per_epoch = -(-len(self.x) // self.batch)
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
        _policy("float32")
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


def step_counts(contenders: list[Contender], seconds: float) -> dict[str, int]:
    """Warm up every contender (tracing, compiling), then pick a step count that takes about
    `seconds` (at least 3 steps, a multiple of its steps per call)."""
    steps = {}
    for c in contenders:
        spe = c.spe
        c.run(max(2, spe))
        per_step = c.run(max(3, spe)) / max(3, spe)
        s = max(3, min(5000, round(seconds / per_step)))
        steps[c.label] = max(spe, s // spe * spe) if s >= spe else s
    return steps


def throughput(
    names: list[str], data_dir: Path | None, rounds: int, seconds: float, peak: dict | None
) -> list:
    """Median images/second of every contender of every config, rounds interleaved."""
    from dlintro.inspect import summarize

    rows = []
    for name in names:
        cfg = offline_config(name, data_dir)
        print(f"[throughput] {name}: building (dlintro decides `auto`) ...", flush=True)
        keras_side = PlainKeras(cfg, data_dir)
        shipped = Dlintro(cfg, data_dir, DLINTRO)
        decision = shipped.decision
        print(f"[throughput] {name}: {decision.line()}", flush=True)
        c = decision.choice
        same = offline_config(name, data_dir, [
            f"train.jit_compile={str(c.jit_compile).lower()}", f"train.precision={c.precision}",
            f"train.steps_per_execution={c.steps_per_execution}"])  # fmt: skip
        contenders: list[Contender] = [
            keras_side,
            shipped,
            Dlintro(same, data_dir, IN_MEMORY, in_memory=True),
        ]
        batch = cfg.data.batch_size
        steps = step_counts(contenders, seconds)
        times: dict[str, list[float]] = {k.label: [] for k in contenders}
        for r in range(rounds + 1):  # round 0 is warm-up: not counted
            for contender in contenders:
                s = steps[contender.label]
                times[contender.label].append(s * batch / contender.run(s))
            print(
                f"[throughput] {name} round {r}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in times.items()),
                flush=True,
            )
        times = {k: v[1:] for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        macs = summarize(shipped.session.model).macs
        row = {
            "config": name,
            "model": cfg.model.name,
            "batch_size": batch,
            "dataset": cfg.data.dataset,
            "augment": [a.name for a in cfg.data.augment or []],
            "jit_compile": c.jit_compile,
            "precision": c.precision,
            "steps_per_execution": c.steps_per_execution,
            "execution": decision.to_dict(),
            "execution_line": decision.line(),
            "images_per_second": med,
            "samples": times,
            # Ratios pair the measurements of one round (taken a few seconds apart), which
            # cancels most of a shared machine's drift; median and range over rounds.
            **_paired("ratio_vs_keras", times[DLINTRO], times[KERAS]),
            **_paired("pipeline_ratio", times[IN_MEMORY], times[DLINTRO]),
            "macs_per_image": macs,
            "gflops_dlintro": gflops(macs, med[DLINTRO]),
            "gflops_keras": gflops(macs, med[KERAS]),
        }
        if peak:
            row["peak_share_dlintro"] = fraction_of_peak(row["gflops_dlintro"], c.precision, peak)
            row["peak_share_keras"] = fraction_of_peak(row["gflops_keras"], "float32", peak)
        rows.append(row)
        for contender in contenders[1:]:
            contender.session.close()
        del contenders, keras_side, shipped
    return rows


def _paired(key: str, a: list[float], b: list[float]) -> dict[str, Any]:
    """{key: median of a[r] / b[r] over rounds r, key_range: [min, max]}."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {key: statistics.median(ratios), f"{key}_range": [min(ratios), max(ratios)]}


# ------------------------------------------------------------------------------ the run


def machine() -> dict:
    """CPU model and flags (dlintro.tune.cpu_facts), cores and versions."""
    import platform

    import keras
    import tensorflow as tf

    from dlintro.tune import cpu_facts

    return {
        "cpu": cpu_facts(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


PARTS = ["peak", "throughput", "accuracy", "memory", "cli"]


def measure(args: argparse.Namespace, data_dir: Path | None, tmp: Path) -> dict:
    """Run the parts asked for; a partial run (--only) updates the other parts' file."""
    parts = set(args.only or PARTS)
    result = {}
    if args.only and args.out.exists():
        result = json.loads(args.out.read_text())
    result |= {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    if "peak" in parts:
        print("[peak] matrix product and convolution, float32 and bfloat16 ...", flush=True)
        result["peak"] = measure_peak()
        print(f"[peak] {json.dumps(result['peak'])}", flush=True)
    if "throughput" in parts:
        result["rounds"] = args.rounds
        result["tune_cache"] = "user" if args.user_tune_cache else "fresh"
        result["throughput"] = throughput(
            args.models, data_dir, args.rounds, args.seconds, result.get("peak")
        )
    if "accuracy" in parts:
        result["time_to_accuracy"] = time_to_accuracy(data_dir, tmp)
    if "memory" in parts:
        result["memory"] = peak_memory(args.models, data_dir, tmp)
    if "cli" in parts:
        result["cli"] = cli_times()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DLINTRO_DATA_DIR"))
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark.json")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="README from --out")
    parser.add_argument(
        "--user-tune-cache", action="store_true",
        help="let `auto` reuse ~/.cache/dlintro/tune.json (default: decide afresh)",
    )  # fmt: skip
    parser.add_argument("--keras-baseline", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dlintro.data.sources import data_root

    # Resolved now: the default data directory lies under XDG_CACHE_HOME, changed below.
    data_dir = data_root(args.data_dir).resolve()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keras_baseline:
        keras_baseline(args.keras_baseline, data_dir)
        return
    if args.render_only:
        result = json.loads(args.out.read_text())
    else:
        if os.environ.pop("DLINTRO_TUNE", None) is not None:
            print("note: DLINTRO_TUNE ignored: dlintro runs as shipped (auto measured)")
        with tempfile.TemporaryDirectory(prefix="dlintro-bench-") as tmp:
            if not args.user_tune_cache:  # `auto` decided afresh, here and in the children
                os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
            result = measure(args, data_dir, Path(tmp))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(render(result))
    if args.update_readme:
        update_readme(ROOT / "README.md", render(result))
        print("updated README.md")


if __name__ == "__main__":
    main()
