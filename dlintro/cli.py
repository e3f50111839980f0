"""The `dlintro` command: parse, call the API, render with rich.

TensorFlow is imported inside the commands that need it, so `dlintro --help` is instant.
Exit codes: 0 success, 2 bad input (one line on stderr), 1 any other failure.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dlintro import __version__
from dlintro.errors import DlintroError, UserError
from dlintro.quiet import native_stderr_off

_STARTED = time.time()  # wall times count from the command's start

app = typer.Typer(
    name="dlintro",
    help="Train image classifiers from a YAML file: the classic deep-learning ladder, "
    "reproducible.\n\nExample: dlintro train configs/mnist_conv.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": os.environ.get("DLINTRO_DEBUG", "") not in ("", "0")}

F = TypeVar("F", bound=Callable[..., Any])


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, whenever a command first needs it, with its C++ start-up lines kept
    off stderr: TensorFlow 2.21 logs them through absl before logging is set up, ignoring
    TF_CPP_MIN_LOG_LEVEL, and a bad-input error must stay one line. Errors still raise."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
                return real.create_module(spec)

            def exec_module(self, module: Any) -> None:
                with native_stderr_off():
                    real.exec_module(module)

        spec.loader = Loader()
        return spec


ConfigArg = Annotated[Path, typer.Argument(help="A YAML config, such as configs/mnist_conv.yaml.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config key: --set data.batch_size=64 (repeatable)."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory laid out as <dir>/<dataset>/<official files> "
        "(default: $DLINTRO_DATA_DIR, else ~/.cache/dlintro/datasets).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _handled(fn: F) -> F:
    """Turn dlintro errors into a one-line message and an exit code (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DlintroError as exc:
            if _state["debug"]:
                raise
            if exc.exit_code >= 128:  # stopped by a signal, with a checkpoint saved
                err.print(str(exc), soft_wrap=True, markup=False, style="yellow")
            else:
                err.print(f"error: {exc}", soft_wrap=True, markup=False, style="red")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted", style="yellow")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            msg = " ".join(str(exc).split())[:300]
            err.print(
                f"error: {type(exc).__name__}: {msg} (run with --debug for the traceback)",
                soft_wrap=True,
                markup=False,
                style="red",
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"dlintro {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True
    if not _state["debug"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
        ):
            sys.meta_path.insert(0, _QuietTensorFlowImport())


# ----------------------------------------------------------------------------- train


@app.command()
@_handled
def train(
    config: Annotated[
        Path | None,
        typer.Argument(help="A YAML config, such as configs/mnist_conv.yaml.", show_default=False),
    ] = None,
    set_: SetOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=1, help="Train for N epochs (overrides train.epochs/steps)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", min=1, help="Train for N steps (overrides train.steps/epochs)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Where to write the run (default runs/<name>-<time>)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue this run directory from its last checkpoint."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --resume: accept config changes that break it.")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a model from a YAML config and write runs/<name>-<time>/, or resume a run.

    Example: dlintro train configs/mnist_conv.yaml --set data.batch_size=64 --epochs 2

    Example: dlintro train --resume runs/mnist_conv-20260101-120000
    """
    from dlintro import config as config_mod

    if epochs is not None and steps is not None:
        raise UserError("--epochs and --steps: give one of them, not both")
    overrides = list(set_ or [])
    if epochs is not None:
        overrides += [f"train.epochs={epochs}", "train.steps=null"]
    if steps is not None:
        overrides += [f"train.steps={steps}", "train.epochs=null"]
    if resume is not None:
        if config is not None or run_dir is not None:
            raise UserError(
                "--resume RUN_DIR takes no CONFIG or --run-dir; use --set to change keys"
            )
        config_mod.load(resume, overrides)  # config errors first, before TensorFlow starts
    elif config is None:
        raise UserError("give a CONFIG to train, or --resume RUN_DIR")
    elif force:
        raise UserError("--force goes with --resume")
    else:
        cfg = config_mod.load(config, overrides)
    from dlintro import train as train_mod
    from dlintro.progress import make_reporter

    common = {
        "data_dir": data_dir, "reporter": make_reporter(out), "command": sys.argv,
        "started": _STARTED,
    }  # fmt: skip
    if resume is not None:
        result = train_mod.resume(resume, overrides, force=force, **common)
    else:
        result = train_mod.run(cfg, run_dir=run_dir, **common)
    m = result.metrics
    if not m:  # a worker other than the chief: it wrote nothing
        out.print(
            f"worker done: {result.steps:,} steps in {result.wall_seconds:.1f} s; "
            f"weights {result.fingerprint[:16]}"
        )
        return
    out.print(
        f"test accuracy {m['accuracy']:.2%}  loss {m['loss']:.4f}  "
        f"({m['num_examples']:,} test images)"
    )
    if result.start_step:
        out.print(
            f"resumed at step {result.start_step:,}; {result.steps:,} steps, "
            f"{_plural(result.epochs, 'epoch')} in all; this session {result.wall_seconds:.1f} s "
            f"wall ({result.images_per_second:,.0f} images/s); "
            f"{result.train_seconds:.1f} s training over all sessions"
        )
    else:
        out.print(
            f"{result.steps:,} steps, {_plural(result.epochs, 'epoch')} in "
            f"{result.wall_seconds:.1f} s wall "
            f"({result.train_seconds:.1f} s training, {result.images_per_second:,.0f} images/s)"
        )
    out.print(f"run directory: {result.run_dir}  (weights {result.fingerprint[:16]})")
    out.print(f"next: dlintro eval {result.run_dir}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_handled
def launch(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, max=64)] = 2,
) -> None:
    """Train on N local worker processes (multi-worker on one machine, over 127.0.0.1).

    Everything after the options is passed to `dlintro train` in each worker; worker 0 is the
    chief and alone writes the run. If one worker fails, the others are stopped.

    Example: dlintro launch --workers 2 configs/mnist_conv.yaml --epochs 1
    """
    from dlintro import launch as launch_mod

    if not ctx.args:
        raise UserError("give the train arguments, e.g. dlintro launch --workers 2 CONFIG")
    code = launch_mod.launch(workers, list(ctx.args), lambda line: out.print(line, markup=False))
    if code:
        err.print(f"error: launch: a worker failed (exit {code})", style="red", markup=False)
        raise typer.Exit(code)


@app.command("env")
@_handled
def env_(json_: JsonOpt = False) -> None:
    """Versions, devices (physical and logical), threads, and the strategy `auto` would pick.

    Example: dlintro env --json
    """
    import platform

    import keras
    import tensorflow as tf

    from dlintro import distribute

    cluster = "TF_CONFIG" if os.environ.get("TF_CONFIG") else (
        "Slurm" if all(v in os.environ for v in distribute.SLURM_VARS) else "none"
    )  # fmt: skip
    info = {
        "dlintro": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "physical_devices": [d.name for d in tf.config.list_physical_devices()],
        "logical_devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "auto_strategy": distribute.auto_choice(),
        "cluster": cluster,
        "xla_on_auto": bool(tf.config.list_physical_devices("GPU")),
    }
    if json_:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        if key.endswith("_threads") and value == 0:
            shown = "0 (TensorFlow decides)"
        table.add_row(key.replace("_", " "), shown)
    out.print(table)


# ----------------------------------------------------------------------------- eval


@app.command("eval")
@_handled
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'dlintro train'.")],
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate a trained run on its test set: accuracy, loss, per-class accuracy, confusion.

    Example: dlintro eval runs/mnist_conv-20260101-120000 --json
    """
    from dlintro import evaluate

    metrics = evaluate.evaluate_run(run_dir, data_dir)
    if json_:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    _render_metrics(metrics)
    out.print(f"report: {Path(run_dir) / 'report' / 'index.html'}")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _render_metrics(m: dict[str, Any]) -> None:
    out.print(
        f"test accuracy [bold]{m['accuracy']:.2%}[/bold]  loss {m['loss']:.4f}  "
        f"({m['num_examples']:,} images)"
    )
    names = m["class_names"]
    table = Table(title="confusion matrix (rows: true class, columns: predicted)", box=None)
    table.add_column("true class", style="bold", no_wrap=True)
    for i in range(len(names)):
        table.add_column(str(i), justify="right")
    table.add_column("accuracy", justify="right", style="bold")
    for i, (name, row, acc) in enumerate(
        zip(names, m["confusion_matrix"], m["per_class_accuracy"], strict=True)
    ):
        cells = [
            f"[green]{v}[/green]" if j == i else (str(v) if v else "·") for j, v in enumerate(row)
        ]
        table.add_row(f"{i} {name}" if name != str(i) else name, *cells, f"{acc:.2%}")
    out.print(table)


# ----------------------------------------------------------------------------- summary


@app.command()
@_handled
def summary(
    target: Annotated[
        Path, typer.Argument(help="A YAML config or a run directory.", show_default=False)
    ],
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show layers, output shapes, parameter arithmetic and multiply-accumulates; no data needed.

    Example: dlintro summary configs/mnist_conv.yaml
    """
    from dlintro import config as config_mod
    from dlintro import runs

    if target.is_dir():
        runs.open_run(target)
    cfg = config_mod.load(target, list(set_ or []))
    from dlintro import data, inspect, models

    info = data.dataset_info(cfg.data.dataset, cfg.data.params)
    model = models.build(cfg.model.name, info.input_shape, info.num_classes, cfg.model.params)
    s = inspect.summarize(model)
    if json_:
        sys.stdout.write(json.dumps(s.to_dict() | {"model": cfg.model.name}) + "\n")
        return
    table = Table(title=f"{cfg.model.name} on {cfg.data.dataset} {tuple(info.input_shape)}")
    for col, justify in [
        ("layer", "left"),
        ("type", "left"),
        ("output", "left"),
        ("parameters", "right"),
        ("arithmetic", "left"),
        ("MACs", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for layer in s.layers:
        table.add_row(
            layer.name,
            layer.type,
            "x".join(str(d) for d in layer.output_shape),
            inspect.format_count(layer.params),
            layer.arithmetic,
            inspect.format_macs(layer.macs) if layer.macs else "",
        )
    out.print(table)
    out.print(
        f"total parameters {inspect.format_count(s.total_params)} "
        f"(trainable {inspect.format_count(s.trainable_params)}, "
        f"non-trainable {inspect.format_count(s.non_trainable_params)}); "
        f"{inspect.format_macs(s.macs)} multiply-accumulates per image"
    )
    if s.non_trainable_params:
        out.print(
            "non-trainable: batch-norm moving means and variances; published counts (and "
            "PyTorch's) usually leave them out, so compare those with the trainable count"
        )


@app.command()
@_handled
def preview(
    config: ConfigArg,
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the PNG grid.")
    ] = Path("augmented.png"),
    rows: Annotated[int, typer.Option("--rows", min=1, max=32)] = 8,
    cols: Annotated[int, typer.Option("--cols", min=1, max=32)] = 8,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write a PNG grid of augmented training images: what the model sees.

    Example: dlintro preview configs/mnist_keras_cnn_augmented.yaml --out augmented.png
    """
    from dlintro import config as config_mod

    cfg = config_mod.load(config, list(set_ or []))
    if out_path.exists() and out_path.is_dir():
        raise UserError(f"{out_path}: is a directory; give a file name such as grid.png")
    from dlintro.data import preview as preview_mod

    grid = preview_mod.augmented_grid(cfg.data, cfg.seed, data_dir, rows=rows, cols=cols)
    try:
        preview_mod.write_png(out_path, grid)
    except OSError as exc:
        raise UserError(f"{out_path}: cannot write the image: {exc.strerror or exc}") from None
    augment = ", ".join(a.name for a in cfg.data.augment) or "no augmentation"
    out.print(f"wrote {out_path} ({rows}x{cols} {cfg.data.dataset} training images; {augment})")


# ----------------------------------------------------------------------------- use the model


@app.command()
@_handled
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'dlintro train'.")],
    images: Annotated[
        list[Path],
        typer.Argument(
            help="PNG or JPEG files, or directories (their image files, sorted, recursive).",
            show_default=False,
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes shown per image.")] = 3,
    invert: Annotated[
        str,
        typer.Option(
            "--invert",
            help="auto|yes|no: the MNIST way for digit photos: invert a dark-on-light image, "
            "crop to the ink, scale it to 20 px, centre it by mass in 28x28. auto: only for "
            "1-channel 28x28 runs, and only images that are mostly light (mean > 0.5).",
        ),
    ] = "auto",
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print a JSON list on stdout: {"file", "top": [{"class", "name", '
            '"probability"}]} per image.',
        ),
    ] = False,
) -> None:
    """Classify image files with a trained run, preprocessed exactly as in training.

    Unreadable files are reported on stderr, one line each (exit code 2); the others are predicted.

    Example: dlintro predict runs/mnist_conv-20260101-120000 my_digits/ photo.jpg --top-k 3
    """
    from rich.markup import escape

    from dlintro import predict as predict_mod
    from dlintro import runs

    runs.open_run(run_dir)
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: must be at least 1")
    if invert not in predict_mod.INVERT_MODES:
        raise UserError(f"--invert {invert!r}: valid: {', '.join(predict_mod.INVERT_MODES)}")
    result = predict_mod.predict_files(run_dir, list(images), top_k, invert)
    if json_:
        sys.stdout.write(json.dumps(result.predictions) + "\n")
    else:
        k = max(len(p["top"]) for p in result.predictions)
        table = Table(title=f"top-{k} classes of {len(result.predictions)} image(s)", box=None)
        table.add_column("file", overflow="fold")
        for i in range(k):
            table.add_column(f"#{i + 1}", no_wrap=True)
        for p in result.predictions:
            cells = [f"{escape(t['name'])} [bold]{t['probability']:.1%}[/bold]" for t in p["top"]]
            table.add_row(escape(p["file"]), *cells)
        out.print(table)
        special = sum(result.mnist_way)
        if special:
            out.print(
                f"{special} image(s) inverted and centred the MNIST way (--invert no to turn off)"
            )
    for path, why in result.failed:
        err.print(f"error: {path}: {why}", soft_wrap=True, markup=False, style="red")
    if result.failed:
        raise typer.Exit(2)


@app.command()
@_handled
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'dlintro train'.")],
    format_: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="keras, savedmodel, tflite or onnx.", show_default=False
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="TFLite only: float16 (half-precision weights) or int8 (weights and activations, "
            "calibrated on 200 training images).",
            show_default=False,
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write (default RUN_DIR/export/<name>).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing artifact.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a run's model with its preprocessing built in, then check parity with Keras.

    The artifact takes uint8 images of the run's input shape and returns class probabilities.

    Parity: up to 300 test images through the artifact's own runtime; exit code 1 unless

    float32: max |Δp| <= 1e-4, 100% top-1 agreement; float16: 1e-2, 99%; int8: 0.1, 97%.

    Example: dlintro export runs/mnist_conv-20260101-120000 --format tflite --quantize int8
    """
    from rich.markup import escape

    from dlintro import export as export_mod
    from dlintro import runs

    runs.open_run(run_dir)
    if format_ is None:
        raise UserError(f"give --format {'|'.join(export_mod.FORMATS)}")
    export_mod.check_request(run_dir, format_, quantize, out_path, force)
    r = export_mod.export_run(run_dir, format_, quantize, out_path, force, data_dir)
    size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes >= 1e5 else f"{r.size_bytes / 1e3:.1f} KB"
    kind = f"{r.format} {r.quantize}" if r.quantize else r.format
    out.print(
        f"wrote {r.path} ({kind}, {size}): input uint8 [batch, "
        f"{', '.join(map(str, r.input_shape))}] with the run's normalization built in, "
        f"output {r.num_classes} class probabilities",
        markup=False,
    )
    out.print(
        f"wrote {r.info_path} (input, output, class names, normalization, parity)", markup=False
    )
    p, tol = r.parity, r.parity.tolerance
    verdict = "[green]passed[/green]" if p.passed else "[red]FAILED[/red]"
    out.print(
        f"parity with the Keras model on {p.num_images} {escape(p.images)} ({p.runtime}): "
        f"max |Δp| {p.max_abs_diff:.2e} (limit {tol.max_abs_diff:.0e}), "
        f"mean {p.mean_abs_diff:.1e}, top-1 agreement {p.top1_agreement:.2%} "
        f"(limit {tol.min_top1_agreement:.0%}): {verdict}"
    )
    if not p.passed:
        raise DlintroError(
            f"{r.path}: parity check failed (above the {kind} tolerance); the artifact is kept "
            "for inspection"
        )


# ----------------------------------------------------------------------------- listings


@app.command("models")
@_handled
def models_(json_: JsonOpt = False) -> None:
    """List the registered models and their parameters.

    Example: dlintro models
    """
    from dlintro import models

    rows = []
    for name in models.MODELS.names():
        meta = models.MODELS.meta(name)
        params = [p for p in models.MODELS.params(name, models.SUPPLIED)]
        rows.append({"name": name, "family": meta.get("family", ""), "params": params,
                     "description": meta.get("description", "")})  # fmt: skip
    if json_:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="models (use as model.name; model.params takes the parameters)")
    for col in ("name", "family", "description", "parameters"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], r["description"], ", ".join(r["params"]))
    out.print(table)


@app.command()
@_handled
def datasets(
    data_dir: DataDirOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check SHA-256 of every file.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List datasets, where each is cached, and whether its files are present.

    Example: DLINTRO_DATA_DIR=../shared/datasets dlintro datasets --verify
    """
    from dlintro.data import download, sources

    root = sources.data_root(data_dir)
    rows = []
    for name in sources.DATASETS.names():
        st = sources.status(name, root)
        if verify and st["needs_files"]:
            st["verified"] = download.verify_files(sources.dataset_info(name), root)
        rows.append(st)
    if json_:
        sys.stdout.write(json.dumps({"root": str(root), "datasets": rows}, default=str) + "\n")
    else:
        out.print(f"data directory: {root}  (set by --data-dir or DLINTRO_DATA_DIR)")
        table = Table()
        for col in ("dataset", "files", "directory", "description"):
            table.add_column(col)
        for r in rows:
            where = str(r["directory"]) if r["needs_files"] else ""
            table.add_row(r["name"], _files_state(r), where, r["description"])
        out.print(table)
    bad = [v for r in rows for v in r.get("verified", []) if v["present"] and not v["ok"]]
    for v in bad:
        err.print(f"error: {v['path']}: {v['problem']}", soft_wrap=True, markup=False, style="red")
    if bad:
        raise typer.Exit(2)


def _files_state(row: dict[str, Any]) -> str:
    if not row["needs_files"]:
        return row.get("files_note") or "no files"
    files = row["files"]
    present = sum(f["present"] and f["size_ok"] for f in files)
    state = f"{present}/{len(files)} present"
    if "verified" in row:
        ok = sum(v["ok"] for v in row["verified"])
        state += f", {ok}/{len(files)} checksums ok"
    return state


# ----------------------------------------------------------------------------- seeing the training

RunsDirArg = Annotated[
    Path | None,
    typer.Argument(
        help="The directory that holds the runs (default: $DLINTRO_RUNS_DIR, else runs).",
        show_default=False,
    ),
]
RunArg = Annotated[Path, typer.Argument(help="A run directory written by 'dlintro train'.")]


@app.command()
@_handled
def board(
    runs_dir: RunsDirArg = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free).")
    ] = 6006,
) -> None:
    """Start TensorBoard on a runs directory, on this machine only; serve until Ctrl-C.

    Example: dlintro board runs --port 6006
    """
    from dlintro import board as board_mod
    from dlintro import runlist

    root = runs_dir or runlist.default_root()
    _, url = board_mod.launch(root, port)
    out.print(f"TensorBoard on {root}: [bold]{url}[/bold]  (Ctrl-C to stop)")
    if not board_mod.has_logs(root):
        out.print("no TensorBoard logs there yet; they appear as runs write them")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.print("TensorBoard stopped")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.2%}"


@app.command("runs")
@_handled
def runs_list(runs_dir: RunsDirArg = None, json_: JsonOpt = False) -> None:
    """List runs: status, model, dataset, test and best validation accuracy, steps, wall time.

    Example: dlintro runs runs --json
    """
    from dlintro import runlist

    rows = runlist.list_runs(runs_dir)
    if json_:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if not rows:
        out.print(f"no runs in {runs_dir or runlist.default_root()}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    width = min(max(len(r["name"]) for r in rows), 32)
    table.add_column("run / model on data", overflow="fold", min_width=width)
    table.add_column("status", max_width=11)
    for col in ("test", "best val", "steps", "wall"):
        table.add_column(col, justify="right", no_wrap=True)
    colors = {"finished": "green", "running": "cyan", "failed": "red"}
    for r in rows:
        state = r["status"]
        steps = f"{r.get('steps') or 0:,}"
        if r.get("total_steps") and r.get("steps") != r.get("total_steps"):
            steps += f"/{r['total_steps']:,}"
        what = f"{r.get('model') or '?'} on {r.get('dataset') or '?'}"
        table.add_row(
            f"[bold]{r['name']}[/bold]\n  [dim]{what}[/dim]",
            f"[{colors.get(state, 'yellow')}]{state}[/]",
            _pct(r.get("test_accuracy")),
            _pct(r.get("best_val_accuracy")),
            steps,
            runlist.duration(r.get("wall_seconds")),
        )
    out.print(table)


def _cell(value: Any, key: str = "") -> str:
    """A value for the compare tables: a config value as YAML would show it (key ""), or a
    result formatted for its metric."""
    if value is None:
        return "-" if key else "null"
    if isinstance(value, float) and "accuracy" in key:
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.1f}" if "seconds" in key else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


@app.command()
@_handled
def compare(run_a: RunArg, run_b: RunArg, json_: JsonOpt = False) -> None:
    """Compare two runs: their config differences and their results side by side.

    Example: dlintro compare runs/mnist_conv-20260101-120000 runs/mnist_conv-20260102-090000
    """
    from dlintro import runlist

    c = runlist.compare(run_a, run_b)
    if json_:
        sys.stdout.write(json.dumps(c) + "\n")
        return
    runs_table = Table.grid(padding=(0, 1))
    runs_table.add_column(style="bold")
    runs_table.add_column(overflow="fold")
    runs_table.add_column(overflow="fold")
    for tag in ("a", "b"):
        r = c[tag]
        runs_table.add_row(
            tag.upper(), r["path"], f"{r['status']}, {r.get('model')} on {r.get('dataset')}"
        )
    out.print(runs_table)
    if c["config_diff"]:
        table = Table(title="config differences", box=None, header_style="bold")
        table.add_column("key", overflow="fold")
        table.add_column("A", overflow="fold")
        table.add_column("B", overflow="fold")
        for d in c["config_diff"]:
            table.add_row(d["key"], _cell(d["a"]), _cell(d["b"]))
        out.print(table)
    else:
        out.print("the configs are the same")
    table = Table(title="results", box=None, header_style="bold")
    table.add_column("metric")
    for col in ("A", "B", "B - A"):
        table.add_column(col, justify="right")
    for m in c["metrics"]:
        a, b, key = m["a"], m["b"], m["metric"]
        delta = "-"
        if isinstance(a, int | float) and isinstance(b, int | float):
            delta = _cell(b - a, key)
            delta = delta if delta.startswith("-") else "+" + delta
        table.add_row(m["name"], _cell(a, key), _cell(b, key), delta)
    out.print(table)


def main() -> None:
    """Entry point of the `dlintro` command."""
    app()


if __name__ == "__main__":
    main()
