"""Parts of scripts/benchmark.py: FLOP arithmetic, the machine's measured peak, the README section.

Achieved GFLOP/s of a training row: a training step costs about three forward passes (the
forward pass, the gradients of the inputs and those of the weights), each of 2 FLOPs per
multiply-accumulate, so 6 x MACs per image (dlintro.inspect.summarize) x images per second.
The peak is what this machine reaches on the two kernels such models spend their time in: a
large matrix product and a 3x3 convolution over 256 channels, in float32 and bfloat16, timed
with TensorFlow (best of a few repetitions after a warm-up). Only `measure_peak` imports
TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlintro import tune

MATMUL_N = 4096
CONV = (16, 32, 32, 256, 256, 3)  # batch, height, width, in and out channels, kernel side
PEAK_DTYPES = ("float32", "bfloat16")
PEAK_REPEATS = 5
# What the other kinds' sections show, said once in each section.
KIND_NOTES = {
    "amx": "AMX (bfloat16 matrix tiles) makes bfloat16 convolutions about 4x faster than float32, "
    "so `auto` picks mixed_bfloat16 for the convnets.",
    "avx512_bf16": "AVX512_BF16 without AMX: bfloat16 dot products in vector registers, so "
    "`auto` picks mixed_bfloat16 only where it measures faster.",
    "avx512": "AVX-512 without bfloat16 units: every row trains in float32.",
    "avx2": "AVX2 only: `auto` has no bfloat16 candidate and every row trains in float32.",
}


def markers(kind: str) -> tuple[str, str]:
    """The README markers around one CPU kind's benchmark section."""
    return f"<!-- bench:start {kind} -->", f"<!-- bench:end {kind} -->"


def training_flops(macs_per_image: float) -> float:
    """FLOPs of one training image: 3 products (forward, input and weight gradients) x 2 MACs."""
    return 6.0 * macs_per_image


def gflops(macs_per_image: float, images_per_second: float) -> float:
    """Achieved training GFLOP/s of a model at a speed."""
    return training_flops(macs_per_image) * images_per_second / 1e9


def matmul_flops(n: int) -> float:
    """FLOPs of an n x n by n x n matrix product."""
    return 2.0 * n**3


def conv_flops(batch: int, height: int, width: int, cin: int, cout: int, k: int) -> float:
    """FLOPs of a k x k convolution, stride 1, SAME padding (output as large as the input)."""
    return 2.0 * batch * height * width * cin * cout * k * k


def peak_dtype(precision: str) -> str:
    """The peak a row is held against: bfloat16 for mixed_bfloat16, float32 otherwise."""
    return "bfloat16" if "bfloat16" in precision else "float32"


def best_peaks(peak: dict[str, Any]) -> dict[str, float]:
    """The machine's peak per dtype: the faster of the matrix product and the convolution."""
    out = {}
    for dtype in PEAK_DTYPES:
        values = [peak[op][dtype] for op in ("matmul", "conv") if peak[op].get(dtype)]
        if values:
            out[dtype] = max(values)
    return out


def fraction_of_peak(gflops_value: float, precision: str, peak: dict[str, Any]) -> float | None:
    """Achieved / peak of the row's precision (None when that peak was not measured)."""
    best = best_peaks(peak).get(peak_dtype(precision))
    return gflops_value / best if best else None


def kind_note(kind: str) -> str:
    """One sentence on this CPU kind, and that the other kinds have their own sections."""
    own = KIND_NOTES.get(kind, "")
    return f"{own} Each kind of CPU has its own section here; figures differ between them."


def measure_peak(repeats: int = PEAK_REPEATS) -> dict[str, Any]:
    """Best GFLOP/s of the matrix product and the convolution in each dtype (None if a dtype
    has no kernel here), timed after one warm-up call."""
    import tensorflow as tf

    n = MATMUL_N
    b, h, w, cin, cout, k = CONV
    ops = {
        "matmul": (matmul_flops(n), lambda d: (tf.random.normal([n, n], dtype=d),) * 2,
                   tf.function(tf.matmul)),
        "conv": (conv_flops(*CONV),
                 lambda d: (tf.random.normal([b, h, w, cin], dtype=d),
                            tf.random.normal([k, k, cin, cout], dtype=d)),
                 tf.function(lambda x, f: tf.nn.conv2d(x, f, 1, "SAME"))),
    }  # fmt: skip
    result: dict[str, Any] = {
        "matmul": {"shape": [n, n, n]},
        "conv": {"shape": list(CONV)},
        "repeats": repeats,
    }
    for op, (flops, inputs, fn) in ops.items():
        for dtype in PEAK_DTYPES:
            try:
                args = inputs(getattr(tf, dtype))
                fn(*args).numpy()  # warm-up: tracing, kernel selection
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(*args).numpy()
                    best = min(best, time.perf_counter() - t0)
                result[op][dtype] = flops / best / 1e9
            except (tf.errors.OpError, TypeError, ValueError):  # no kernel for this dtype
                result[op][dtype] = None
    return result


# ------------------------------------------------------------------------------ the README


def _span(row: dict, key: str) -> str:
    lo, hi = row.get(f"{key}_range", (row[key], row[key]))
    return f"({lo:.2f}-{hi:.2f})"


def _gflops_cell(value: float, share: float | None, precision: str) -> str:
    short = {"float32": "fp32", "bfloat16": "bf16"}[peak_dtype(precision)]
    if share is None:
        return f"{value:,.1f}"
    return (
        f"{value:,.1f} ({share:.1%} of {short})"
        if share < 0.1
        else f"{value:,.1f} ({share:.0%} of {short})"
    )


def _peak_text(peak: dict[str, Any]) -> str:
    def cell(op: str, dtype: str) -> str:
        value = peak[op].get(dtype)
        return f"{value:,.0f}" if value else "n/a"

    n = peak["matmul"]["shape"][0]
    b, h, w, cin, cout, k = peak["conv"]["shape"]
    return (
        f"Measured peak of this machine (best of {peak['repeats']} after a warm-up), GFLOP/s: "
        f"matrix product {n}x{n} float32 {cell('matmul', 'float32')}, bfloat16 "
        f"{cell('matmul', 'bfloat16')}; {k}x{k} convolution {cin}->{cout} channels on "
        f"{b}x{h}x{w} float32 {cell('conv', 'float32')}, bfloat16 {cell('conv', 'bfloat16')}."
    )


def _choice(decision: dict[str, Any]) -> str:
    return tune.Choice(**decision["choice"]).short()


def render(result: dict) -> str:
    """The README's performance section (markdown) from a benchmark result."""
    m = result["machine"]
    cpu = m["cpu"]
    lines = [
        f"Measured on **{cpu['model']}** ({', '.join(cpu['flags']) or 'no AVX2'}; "
        f"{m['cpu_count']} cores, no GPU), TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"{result['date']}, by `python scripts/benchmark.py --data-dir ../shared/datasets`. "
        + kind_note(tune.cpu_kind(cpu["flags"])),
    ]
    switch = result.get("onednn")
    if switch and switch.get("enabled") is not None:
        lines += ["", f"TensorFlow's oneDNN switch: dlintro {switch['line']}; Keras fit runs "
                  "with TensorFlow's default (each side in its own process)."]  # fmt: skip
    peak = result.get("peak")
    if peak:
        lines += ["", _peak_text(peak)]
    if result.get("throughput"):
        lines += [
            "",
            "Images per second in steady state, medians of "
            f"{result['rounds']} interleaved rounds. dlintro runs as shipped: `auto` settings, "
            "chosen when the run is built, before timing (column *auto*: XLA, precision, steps "
            "per call); Keras fit runs float32 with compile() defaults. Ratios are per round "
            "(measured seconds apart), median and (range). GFLOP/s = 6 x MACs per image x "
            "images/s, with the share of the measured peak of the row's precision:",
            "",
            "| config | batch | auto | Keras fit | dlintro | ratio | in-memory batch / dlintro "
            "| GFLOP/s Keras fit | GFLOP/s dlintro |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
    for row in result.get("throughput", []):
        ips, precision = row["images_per_second"], row["precision"]
        lines.append(
            f"| {row['config']} | {row['batch_size']} | {_choice(row['execution'])} | "
            f"{ips['Keras fit']:,.0f} | {ips['dlintro']:,.0f} | "
            f"**{row['ratio_vs_keras']:.2f}x** {_span(row, 'ratio_vs_keras')} | "
            f"{row['pipeline_ratio']:.2f} {_span(row, 'pipeline_ratio')} | "
            f"{_gflops_cell(row['gflops_keras'], row.get('peak_share_keras'), 'float32')} | "
            f"{_gflops_cell(row['gflops_dlintro'], row.get('peak_share_dlintro'), precision)} |"
        )
    tta = result.get("time_to_accuracy")
    if tta:
        d, k = tta["dlintro"], tta["keras"]
        how = f" (auto: {_choice(d['execution'])})" if d.get("execution") else ""
        lines += [
            "",
            f"`dlintro train configs/{tta['config']}.yaml`{how}: **{d['accuracy']:.2%}** test "
            f"accuracy **{d['wall_seconds']:.1f} s** after the command started (training "
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


def update_readme(readme: Path, text: str, kind: str) -> None:
    """Replace what lies between the README's markers of CPU kind `kind` with `text`."""
    body = readme.read_text()
    start, end = markers(kind)
    if start not in body or end not in body:
        raise SystemExit(f"{readme.name} lacks the markers {start} ... {end}")
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")
