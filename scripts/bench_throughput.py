"""Throughput of scripts/benchmark.py: each config trained by dlintro as shipped, by the plain
Keras way and by dlintro on one batch in memory, in interleaved rounds (see benchmark.py's
docstring). When dlintro runs with another oneDNN switch than TensorFlow's default, each side
lives in a child process of its own (`benchmark.py --serve`), driven round by round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_parts import fraction_of_peak, gflops  # scripts/bench_parts.py
from offline_data import offline_config, plain_arrays  # scripts/offline_data.py

BENCHMARK = Path(__file__).with_name("benchmark.py")
WARMUP_BATCHES = 3
KERAS, DLINTRO, IN_MEMORY = "Keras fit", "dlintro", "dlintro, batch in memory"
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # dlintro.onednn.ENV (that module is imported late)


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


def build_side(side: str, name: str, data_dir: Path | None) -> tuple[list[Contender], dict]:
    """The contenders of one side ("keras": model.fit; "dlintro": as shipped and with its batch
    in memory) and, for dlintro, what `auto` chose ({"execution", "line", "choice", "macs"})."""
    cfg = offline_config(name, data_dir)
    if side == "keras":
        return [PlainKeras(cfg, data_dir)], {}
    from dlintro.inspect import summarize

    shipped = Dlintro(cfg, data_dir, DLINTRO)
    decision = shipped.decision
    c = decision.choice
    same = offline_config(name, data_dir, [
        f"train.jit_compile={str(c.jit_compile).lower()}", f"train.precision={c.precision}",
        f"train.steps_per_execution={c.steps_per_execution}"])  # fmt: skip
    info = {
        "execution": decision.to_dict(), "line": decision.line(),
        "choice": {"jit_compile": c.jit_compile, "precision": c.precision,
                   "steps_per_execution": c.steps_per_execution},
        "macs": summarize(shipped.session.model).macs,
    }  # fmt: skip
    return [shipped, Dlintro(same, data_dir, IN_MEMORY, in_memory=True)], info


def serve(side: str, name: str, data_dir: Path | None) -> None:
    """A side in a process of its own (`--serve`): say what it holds, then answer each
    "LABEL<TAB>STEPS" line with the seconds those steps took."""
    contenders, info = build_side(side, name, data_dir)
    by_label = {c.label: c for c in contenders}
    info["contenders"] = [{"label": c.label, "spe": c.spe} for c in contenders]
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        label, steps = line.rstrip("\n").split("\t")
        print(by_label[label].run(int(steps)), flush=True)


def sides(name: str, data_dir: Path | None, switch: Any) -> tuple[list[Contender], dict, list]:
    """Both sides' contenders: in this process when dlintro runs with TensorFlow's default
    oneDNN switch, else each side in a child process (Keras fit with TensorFlow's default,
    dlintro with its switch), driven round by round as here."""
    if switch.enabled is None:
        keras_side, _ = build_side("keras", name, data_dir)
        mine, info = build_side("dlintro", name, data_dir)
        return keras_side + mine, info, []
    contenders, info, procs = [], {}, []
    for side in ("keras", "dlintro"):
        env = dict(os.environ)
        env.pop(ONEDNN_ENV, None)
        if side == "dlintro":
            env[ONEDNN_ENV] = "1" if switch.enabled else "0"
        argv = [sys.executable, str(BENCHMARK), "--serve", side, "--models", name]
        argv += ["--data-dir", str(data_dir)] if data_dir else []
        proc = subprocess.Popen(argv, env=env, text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)  # fmt: skip
        procs.append(proc)
        answer = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        contenders += [Remote(proc, row["label"], row["spe"]) for row in answer["contenders"]]
        info = info or {k: v for k, v in answer.items() if k != "contenders"}
    return contenders, info, procs


class Remote(Contender):
    """A contender in a child process (`serve`)."""

    def __init__(self, proc: subprocess.Popen, label: str, spe: int) -> None:
        self.proc, self.label, self.spe = proc, label, spe

    def run(self, steps: int) -> float:
        self.proc.stdin.write(f"{self.label}\t{steps}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return float(self.proc.stdout.readline())  # type: ignore[union-attr]


def throughput(
    names: list[str],
    data_dir: Path | None,
    rounds: int,
    seconds: float,
    peak: dict | None,
    switch: Any,
) -> list:
    """Median images/second of every contender of every config, rounds interleaved."""
    rows = []
    for name in names:
        print(f"[throughput] {name}: building (dlintro decides `auto`) ...", flush=True)
        contenders, info, procs = sides(name, data_dir, switch)
        print(f"[throughput] {name}: {info['line']}", flush=True)
        c = info["choice"]
        batch = offline_config(name, data_dir).data.batch_size
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
        macs = info["macs"]
        cfg = offline_config(name, data_dir)
        row = {
            "config": name,
            "model": cfg.model.name,
            "batch_size": batch,
            "dataset": cfg.data.dataset,
            "augment": [a.name for a in cfg.data.augment or []],
            **c,
            "onednn": switch.to_dict(),
            "execution": info["execution"],
            "execution_line": info["line"],
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
            row["peak_share_dlintro"] = fraction_of_peak(
                row["gflops_dlintro"], c["precision"], peak
            )
            row["peak_share_keras"] = fraction_of_peak(row["gflops_keras"], "float32", peak)
        rows.append(row)
        for contender in contenders:
            if isinstance(contender, Dlintro):
                contender.session.close()
        for proc in procs:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=60)
        del contenders
    return rows


def _paired(key: str, a: list[float], b: list[float]) -> dict[str, Any]:
    """{key: median of a[r] / b[r] over rounds r, key_range: [min, max]}."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {key: statistics.median(ratios), f"{key}_range": [min(ratios), max(ratios)]}
