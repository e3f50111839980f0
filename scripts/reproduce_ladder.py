"""Reproduce the published figures of shared/LADDER.md and write the README's results table.

Each config is trained in a fresh `dlintro train` process on the real data; the script reads
back the run's meta.json and metrics.json and writes results/ladder.json (merged by config
name, so a partial rerun updates only what it ran) and results/ladder.md.

    python scripts/reproduce_ladder.py --data-dir ../shared/datasets            # every row
    python scripts/reproduce_ladder.py mnist_conv mnist_softmax --update-readme  # some rows
    python scripts/reproduce_ladder.py --render-only --update-readme             # table only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# config name -> (published test accuracy in %, published parameter count or None, note)
PUBLISHED: dict[str, tuple[float, int | None, str]] = {
    "mnist_softmax": (92.68, 7_850, ""),
    "mnist_mlp5_sigmoid": (97.88, 185_300, ""),
    "mnist_mlp5_relu_decay": (98.24, 185_300, ""),
    "mnist_mlp5_relu_decay_dropout": (98.17, 185_300, ""),
    "mnist_conv": (98.9, 122_270, ""),
    "mnist_conv_big_dropout": (99.3, 244_076, ""),
    "mnist_mlp5_bn_sigmoid": (98.1, None, ""),
    "mnist_mlp5_bn_relu": (98.5, None, ""),
    "mnist_conv_bn": (99.5, None, ""),
    "mnist_mlp_16x16": (95.24, 13_002, ""),
    "mnist_keras_basic": (98.0, 407_050, "about"),
    "mnist_keras_cnn": (99.23, 1_192_042, ""),
    "mnist_keras_cnn_augmented": (99.6, 1_192_042, "about"),
    "mnist_lenet5": (99.0, 61_706, "about"),
    "mnist_tf_deep": (99.2, 3_274_634, "about"),
}


def run_one(name: str, data_dir: str | None, out: Path) -> dict:
    """Train configs/<name>.yaml in a new process and collect what the run recorded."""
    run_dir = out / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = ["dlintro", "train", f"configs/{name}.yaml"]
    if data_dir:
        command += ["--data-dir", data_dir]
    argv = [sys.executable, "-m", "dlintro", *command[1:], "--run-dir", str(run_dir)]
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: dlintro train exited {proc.returncode}; see {log}")
    meta = json.loads((run_dir / "meta.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    published, params, note = PUBLISHED[name]
    return {
        "config": name,
        "published_accuracy": published,
        "published_note": note,
        "published_params": params,
        "params": meta["model"]["params"],
        "test_accuracy": round(100 * metrics["accuracy"], 2),
        "steps": meta["steps"],
        "epochs": meta["epochs"],
        "wall_seconds": meta["wall_seconds"],
        "images_per_second": meta["images_per_second"],
        "machine": f"{meta['machine']['cpu_count']} CPU cores, {platform.machine()}",
        "versions": meta["versions"],
        "command": " ".join(command[:3]),
        "date": time.strftime("%Y-%m-%d"),
    }


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "| config | published | measured | parameters | steps (epochs) | wall time | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in PUBLISHED:
        r = results.get(name)
        pub, params, note = PUBLISHED[name]
        published = f"{note + ' ' if note else ''}{pub:.2f}%"
        if r is None:
            lines.append(f"| {name} | {published} | not yet measured | | | | |")
            continue
        delta = r["test_accuracy"] - pub
        mark = "" if delta >= 0 or note else f" ({delta:+.2f})"
        count = f"{r['params']:,}" + (" (exact)" if params == r["params"] else "")
        lines.append(
            f"| {name} | {published} | **{r['test_accuracy']:.2f}%**{mark} | {count} | "
            f"{r['steps']:,} ({r['epochs']}) | {r['wall_seconds'] / 60:.1f} min | "
            f"`{r['command']}` |"
        )
    machines = sorted({r["machine"] for r in results.values()})
    lines.append("")
    lines.append(f"Measured on {', '.join(machines) or 'n/a'}; wall time from the command's start.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="config names (default: every row)")
    parser.add_argument("--data-dir", default=os.environ.get("DLINTRO_DATA_DIR"))
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the README table")
    parser.add_argument(
        "--render-only", action="store_true", help="train nothing; rebuild the table from the JSON"
    )
    args = parser.parse_args()
    names = [] if args.render_only else (args.configs or list(PUBLISHED))
    unknown = [n for n in names if n not in PUBLISHED]
    if unknown:
        raise SystemExit(f"unknown configs: {', '.join(unknown)}; known: {', '.join(PUBLISHED)}")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "ladder.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in names:
        print(f"training {name} ...", flush=True)
        results[name] = run_one(name, args.data_dir, args.out)
        r = results[name]
        print(f"  {r['test_accuracy']:.2f}% (published {r['published_accuracy']}%), "
              f"{r['wall_seconds']:.0f} s", flush=True)  # fmt: skip
        store.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "ladder.md").write_text(table)
    print(table)
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = "<!-- ladder:start -->", "<!-- ladder:end -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        readme.write_text(f"{head}{start}\n{table}{end}{tail}")


if __name__ == "__main__":
    main()
