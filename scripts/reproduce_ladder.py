"""Reproduce the published figures of shared/LADDER.md and write the README's results table.

Each config is trained in a fresh `dlintro train` process on the real data; the script reads
back the run's meta.json and metrics.json and writes results/ladder.json (merged by config
name, so a partial rerun updates only what it ran) and results/ladder.md.

    python scripts/reproduce_ladder.py --data-dir ../shared/datasets            # every row
    python scripts/reproduce_ladder.py mnist_conv mnist_softmax --update-readme  # some rows
    python scripts/reproduce_ladder.py --render-only --update-readme             # table only
    python scripts/reproduce_ladder.py cifar10_resnet56 --steps 100 --update-readme  # a budget run
    python scripts/reproduce_ladder.py cifar10_resnet20_short --from-run runs/<run> --update-readme

CIFAR-10 rows train from the official archive, or offline from the JPEG copy of a data directory
(`cifar10_jpeg/`, see scripts/offline_data.py). `--steps N` makes a budget run: N steps instead
of the full recipe, labelled as such, with the steady-state speed and what the full recipe
would take on this machine (after `dlintro tune --as-run`, which probes as the full recipe's
run would: so in the settings a full run would choose). `--from-run` records a row from a
finished run directory instead of training (a run trained by hand, or across sittings with
`dlintro train --resume`: the row says how many times it was resumed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline_data import data_overrides  # noqa: E402  (scripts/offline_data.py)

from dlintro import tune  # noqa: E402

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

# CIFAR-10 rows: config name -> (published test accuracy in %, published parameters as printed)
CIFAR: dict[str, tuple[float, str]] = {
    "cifar10_keras_conv": (78.62, "1,084,234"),
    "cifar10_resnet20": (91.25, "0.27M"),
    "cifar10_resnet20_short": (91.25, "0.27M"),  # the paper's figure, for its 182 epochs
    "cifar10_resnet32": (92.49, "0.46M"),
    "cifar10_resnet44": (92.83, "0.66M"),
    "cifar10_resnet56": (93.03, "0.85M"),
    "cifar10_resnet110": (93.39, "1.7M"),
    "cifar10_preact_resnet164": (94.54, "1.7M"),
    "cifar10_nin": (91.19, ""),
    "cifar10_allcnn": (92.75, ""),
    "cifar10_vgg11_bn": (92.39, "28,149,514"),  # huyvnphan/PyTorch_CIFAR10
    "cifar10_vgg16_bn": (94.00, "33,646,666"),
    "cifar10_cuda_convnet": (82.0, "89,578"),  # layers-18pct: about 18% test error
}


def run_one(name: str, data_dir: str | None, out: Path, steps: int | None = None) -> dict:
    """Train configs/<name>.yaml in a new process and collect what the run recorded. A budget
    run (`steps`) is preceded by `dlintro tune --as-run`, which probes as the full recipe's run
    would (its budget) and fills the cache the budget run then decides from: a run of a few
    dozen steps can afford to time only its first candidate (float32), and its row should show
    the speed, and the hours, of the settings the full recipe would choose."""
    from dlintro import config

    run_dir = out / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = config.load(ROOT / "configs" / f"{name}.yaml")
    options = [f"configs/{name}.yaml"]
    for override in data_overrides(cfg.data.dataset, data_dir):
        options += ["--set", override]
    if data_dir:
        options += ["--data-dir", data_dir]
    if steps:
        dlintro(name, ["tune", "--as-run", *options], out / "logs" / f"{name}.tune.log")
    extra = ["--steps", str(steps)] if steps else []
    dlintro(name, ["train", *options, *extra, "--run-dir", str(run_dir)],
            out / "logs" / f"{name}.log")  # fmt: skip
    return row_from_run(name, run_dir)


def dlintro(name: str, arguments: list[str], log: Path) -> None:
    """Run `dlintro ARGUMENTS` in a new process from the project's root, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "dlintro", *arguments]
    with log.open("w") as f:
        proc = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: dlintro {arguments[0]} exited {proc.returncode}; see {log}")


def row_from_run(name: str, run_dir: Path) -> dict:
    """The row of a finished run directory (meta.json and metrics.json)."""
    from dlintro import config

    cfg = config.load(ROOT / "configs" / f"{name}.yaml")
    meta = json.loads((run_dir / "meta.json").read_text())
    if meta.get("status") != "finished" or meta.get("name") != name:
        raise SystemExit(
            f"{run_dir}: a finished run of {name} is needed (status {meta.get('status')!r}, "
            f"config {meta.get('name')!r})"
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if name in CIFAR:
        return cifar_result(name, cfg, meta, metrics)
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
        "machine": machine(meta),
        "versions": meta["versions"],
        "command": f"dlintro train configs/{name}.yaml",
        "date": time.strftime("%Y-%m-%d"),
    }


def machine(meta: dict) -> str:
    """The CPU a run was measured on and what it trained in, e.g. '2-core AMD EPYC (AVX-512
    BF16), mixed_bfloat16': figures differ by CPU kind, so every row names its own."""
    m = meta["machine"]
    kind = tune.cpu_kind_name(tune.cpu_kind(m.get("cpu", {}).get("flags", [])))
    precision = (meta.get("execution") or {}).get("choice", {}).get("precision", "float32")
    model = m.get("cpu", {}).get("model", platform.machine())
    return f"{m['cpu_count']}-core {model} ({kind}), {precision}"


def trainable_params(cfg: Any, meta: dict) -> int:
    """The model's trainable parameters (published counts of batch-norm nets leave out the
    moving statistics, which meta.json's total includes)."""
    import keras

    from dlintro import models

    shape, classes = meta["data"]["input_shape"], len(meta["data"]["class_names"])
    model = models.build(cfg.model.name, tuple(shape), classes, dict(cfg.model.params))
    return int(sum(keras.ops.size(w) for w in model.trainable_weights))


def cifar_result(name: str, cfg: Any, meta: dict, metrics: dict) -> dict:
    """A CIFAR row: accuracy after the run, steady speed and the full recipe's time here."""
    per_epoch = math.ceil(meta["data"]["num_train"] / cfg.data.batch_size)
    recipe_steps = cfg.train.steps or cfg.train.epochs * per_epoch
    ips = meta.get("steady_images_per_second") or meta["images_per_second"]
    return {
        "config": name,
        "published_accuracy": CIFAR[name][0],
        "published_params": CIFAR[name][1],
        "params": meta["model"]["params"],
        "trainable_params": trainable_params(cfg, meta),
        "test_accuracy": round(100 * metrics["accuracy"], 2),
        "steps": meta["steps"],
        "budget": meta["steps"] < recipe_steps,
        "recipe_steps": recipe_steps,
        "dataset": meta["data"]["dataset"],
        "seconds_per_epoch": meta["data"]["num_train"] / ips,
        "recipe_hours": recipe_steps * cfg.data.batch_size / ips / 3600,
        "wall_seconds": meta["wall_seconds"],
        "resumes": len(meta.get("resumes") or []),
        "machine": machine(meta),
        "command": f"dlintro train configs/{name}.yaml",
        "date": time.strftime("%Y-%m-%d"),
    }


def sittings(resumes: int) -> str:
    """How a full run was trained: 'in one go' or 'in 3 sittings (2 resumes)'."""
    if not resumes:
        return "in one go"
    return f"in {resumes + 1} sittings ({resumes} resume{'s' if resumes > 1 else ''})"


def cifar_markdown(results: dict[str, dict]) -> str:
    lines = [
        "| config | published | measured | parameters | steps run (recipe) | seconds per epoch "
        "| full recipe | measured on | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (pub, params) in CIFAR.items():
        r = results.get(name)
        if r is None:
            lines.append(
                f"| {name} | {pub:.2f}% | not yet measured | {params} | | | | | "
                f"`dlintro train configs/{name}.yaml` |"
            )
            continue
        label = (
            f"{r['test_accuracy']:.2f}% after a {r['steps']:,}-step budget run"
            if r["budget"]
            else f"**{r['test_accuracy']:.2f}%** (full recipe, {sittings(r.get('resumes', 0))})"
        )
        published_params = f" (published {params})" if params else ""
        count = f"{r['params']:,}"
        trainable = r.get("trainable_params", r["params"])
        if params == f"{r['params']:,}":
            published_params = " (exact)"
        elif params == f"{trainable:,}":
            count = f"{trainable:,} trainable"
            published_params = f" (exact; {r['params']:,} with batch norm's moving statistics)"
        lines.append(
            f"| {name} | {pub:.2f}% | {label} | {count}{published_params} | "
            f"{r['steps']:,} ({r['recipe_steps']:,}) | {r['seconds_per_epoch']:,.0f} s | "
            f"{r['recipe_hours']:.1f} h | {r['machine']} | `{r['command']}` |"
        )
    return "\n".join(lines) + "\n"


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
        mark = "" if delta >= 0 else f" ({delta:+.2f})"
        count = f"{r['params']:,}" + (" (exact)" if params == r["params"] else "")
        lines.append(
            f"| {name} | {published} | **{r['test_accuracy']:.2f}%**{mark} | {count} | "
            f"{r['steps']:,} ({r['epochs']}) | {r['wall_seconds'] / 60:.1f} min | "
            f"`{r['command']}` |"
        )
    machines = sorted({r["machine"] for n, r in results.items() if n in PUBLISHED})
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
    parser.add_argument("--steps", type=int, help="a budget run of N steps (CIFAR rows)")
    parser.add_argument(
        "--from-run", type=Path, help="record one config's row from this finished run directory"
    )
    args = parser.parse_args()
    names = [] if args.render_only else (args.configs or list(PUBLISHED))
    known = [*PUBLISHED, *CIFAR]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown configs: {', '.join(unknown)}; known: {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "ladder.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    if args.from_run and len(names) != 1:
        raise SystemExit("--from-run records one config: name it (e.g. cifar10_resnet20_short)")
    for name in names:
        print(f"{'reading' if args.from_run else 'training'} {name} ...", flush=True)
        if args.from_run:
            r = row_from_run(name, args.from_run)
        else:
            r = run_one(name, args.data_dir, args.out, args.steps)
        # Re-read before writing: another run of this script may have stored rows meanwhile.
        results = json.loads(store.read_text()) if store.exists() else {}
        results[name] = r
        print(f"  {r['test_accuracy']:.2f}% (published {r['published_accuracy']}%), "
              f"{r['wall_seconds']:.0f} s", flush=True)  # fmt: skip
        store.write_text(json.dumps(results, indent=2) + "\n")
    tables = {"ladder": markdown(results), "cifar": cifar_markdown(results)}
    (args.out / "ladder.md").write_text("\n".join(tables.values()))
    print("\n".join(tables.values()))
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        for key, table in tables.items():
            start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
            if start not in text:
                continue
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            text = f"{head}{start}\n{table}{end}{tail}"
        readme.write_text(text)


if __name__ == "__main__":
    main()
