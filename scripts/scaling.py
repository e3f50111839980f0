"""Images per second per replica count: the table a first GPU machine can fill in.

For each replica count it trains the config for a fixed number of steps in a fresh
`dlintro train` process, with the mirrored strategy over that many GPUs (CUDA_VISIBLE_DEVICES)
or, without GPUs, that many logical CPU devices; `--workers` instead runs `dlintro launch`
with that many local worker processes. The global batch grows with the replicas
(distribution.batch: per_replica), as in a real scale-out.

    python scripts/scaling.py configs/mnist_conv.yaml --replicas 1 2 4 --steps 300
    python scripts/scaling.py configs/cifar10_resnet20.yaml --replicas 1 2 --workers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def gpu_count() -> int:
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


def measure(config: str, replicas: int, steps: int, workers: bool, gpus: int, extra: list[str]):
    run = Path(tempfile.mkdtemp(prefix="dlintro-scaling-")) / "run"
    common = [config, "--steps", str(steps), "--set", "distribution.batch=per_replica", *extra]
    env = dict(os.environ)
    if workers:
        argv = ["launch", "--workers", str(replicas), *common, "--run-dir", str(run)]
    else:
        argv = ["train", *common, "--run-dir", str(run)]
        argv += ["--set", "distribution.strategy=" + ("mirrored" if replicas > 1 else "default")]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(replicas))
        elif replicas > 1:
            argv += ["--set", f"distribution.logical_cpus={replicas}"]
    proc = subprocess.run([sys.executable, "-m", "dlintro", *argv], env=env, text=True,
                          capture_output=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    meta = json.loads((run / "meta.json").read_text())
    return {
        "replicas": replicas,
        "mode": "workers" if workers else ("gpus" if gpus else "logical cpus"),
        "global_batch": meta["distribution"]["global_batch"],
        "images_per_second": meta["images_per_second"],
        "train_seconds": meta["train_seconds"],
        "line": meta["distribution"]["line"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workers", action="store_true", help="local worker processes")
    parser.add_argument("--out", type=Path, default=Path("results/scaling.json"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    gpus = 0 if args.workers else gpu_count()
    if gpus and max(args.replicas) > gpus:
        raise SystemExit(f"only {gpus} GPUs for {max(args.replicas)} replicas")
    extra = [x for s in args.sets for x in ("--set", s)]
    rows = [measure(args.config, r, args.steps, args.workers, gpus, extra) for r in args.replicas]
    base = rows[0]["images_per_second"] / rows[0]["replicas"]
    print("replicas  global batch    images/s  per replica  efficiency")
    for r in rows:
        per = r["images_per_second"] / r["replicas"]
        r["efficiency"] = round(per / base, 3)
        print(f"{r['replicas']:>8} {r['global_batch']:>13} {r['images_per_second']:>11,.0f} "
              f"{per:>12,.0f} {r['efficiency']:>11.0%}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": args.config, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
