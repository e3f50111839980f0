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
Results go to results/benchmark-<kind>.json (kind: amx, avx512_bf16, avx512 or avx2) and,
with --update-readme, that kind's block of the README's performance section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# scripts/bench_parts.py, bench_processes.py and bench_throughput.py
from bench_parts import measure_peak, render, update_readme  # noqa: E402
from bench_processes import cli_times, keras_baseline, peak_memory, time_to_accuracy  # noqa: E402
from bench_throughput import ONEDNN_ENV, serve, throughput  # noqa: E402

from dlintro.tune import cpu_facts, cpu_kind  # noqa: E402

MODELS = [
    "mnist_softmax",
    "mnist_mlp5_relu_decay",
    "mnist_conv_big_dropout",
    "mnist_keras_cnn",
    "cifar10_keras_conv",
    "cifar10_resnet20",
]


# ------------------------------------------------------------------------------ the run


def dlintro_switch() -> Any:
    """The oneDNN switch dlintro would run with here (dlintro.onednn, decided before this
    process imports TensorFlow); this process, and Keras fit, keep TensorFlow's default."""
    from dlintro import onednn

    user = os.environ.get(ONEDNN_ENV)
    switch = onednn.decide()
    if user is None:
        os.environ.pop(ONEDNN_ENV, None)
    return switch


def machine() -> dict:
    """CPU model and flags (dlintro.tune.cpu_facts), cores and versions."""
    import platform

    import keras
    import tensorflow as tf

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
    result["onednn"] = args.switch.to_dict() | {"line": args.switch.line()}
    print(f"[onednn] dlintro: {args.switch.line()}; Keras fit: TensorFlow's default", flush=True)
    if "peak" in parts:
        print("[peak] matrix product and convolution, float32 and bfloat16 ...", flush=True)
        result["peak"] = measure_peak()
        print(f"[peak] {json.dumps(result['peak'])}", flush=True)
    if "throughput" in parts:
        result["rounds"] = args.rounds
        result["tune_cache"] = "user" if args.user_tune_cache else "fresh"
        result["throughput"] = throughput(
            args.models, data_dir, args.rounds, args.seconds, result.get("peak"), args.switch
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
    parser.add_argument("--out", type=Path, help="default: results/benchmark-<kind>.json")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="README from --out")
    parser.add_argument(
        "--user-tune-cache", action="store_true",
        help="let `auto` reuse ~/.cache/dlintro/tune.json (default: decide afresh)",
    )  # fmt: skip
    parser.add_argument("--keras-baseline", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["keras", "dlintro"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dlintro.data.sources import data_root

    # Resolved now: the default data directory lies under XDG_CACHE_HOME, changed below.
    data_dir = data_root(args.data_dir).resolve()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keras_baseline:
        keras_baseline(args.keras_baseline, data_dir)
        return
    if args.serve:
        serve(args.serve, args.models[0], data_dir)
        return
    if args.out is None:
        kind = cpu_kind(cpu_facts()["flags"])
        args.out = ROOT / "results" / f"benchmark-{kind}.json"
    if args.render_only:
        result = json.loads(args.out.read_text())
    else:
        if os.environ.pop("DLINTRO_TUNE", None) is not None:
            print("note: DLINTRO_TUNE ignored: dlintro runs as shipped (auto measured)")
        with tempfile.TemporaryDirectory(prefix="dlintro-bench-") as tmp:
            if not args.user_tune_cache:  # `auto` decided afresh, here and in the children
                os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
            args.switch = dlintro_switch()
            result = measure(args, data_dir, Path(tmp))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    text = render(result)
    print(text)
    if args.update_readme:
        update_readme(ROOT / "README.md", text, cpu_kind(result["machine"]["cpu"]["flags"]))
        print("updated README.md")


if __name__ == "__main__":
    main()
