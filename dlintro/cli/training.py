"""The training commands: `train` (a new run or a resumed one), `launch` (local multi-worker
training) and `env` (where training would run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlintro.cli.common import (
    STARTED,
    DataDirOpt,
    JsonOpt,
    SetOpt,
    app,
    err,
    handled,
    out,
    percent,
)
from dlintro.errors import UserError


@app.command("train")
@handled
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
    from_checkpoint: Annotated[
        int | None,
        typer.Option(
            "--from-checkpoint",
            min=0,
            metavar="STEP",
            help="With --resume: continue from the checkpoint of this step instead of the "
            "newest (0: start the run over); later checkpoints are removed.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a model from a YAML config and write runs/<name>-<time>/, or resume a run.

    Example: dlintro train configs/mnist_conv.yaml --set data.batch_size=64 --epochs 2

    Example: dlintro train --resume runs/mnist_conv-20260101-120000
    """
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
        from dlintro import runs

        source = runs.open_run(resume) / "config.yaml"
    elif config is None:
        raise UserError("give a CONFIG to train, or --resume RUN_DIR")
    elif force or from_checkpoint is not None:
        raise UserError(f"{'--force' if force else '--from-checkpoint'} goes with --resume")
    else:
        source = config
    cfg = _load_before_tensorflow(source, overrides, resume)
    from dlintro import train as train_mod
    from dlintro.progress import make_reporter, passes

    common = {
        "data_dir": data_dir, "reporter": make_reporter(out), "command": sys.argv,
        "started": STARTED,
    }  # fmt: skip
    if resume is not None:
        result = train_mod.resume(
            resume, overrides, force=force, from_step=from_checkpoint, **common
        )
    else:
        result = train_mod.run(cfg, run_dir=run_dir, **common)
    m = result.metrics
    if not m:  # a worker other than the chief: it wrote nothing
        out.print(
            f"worker done: {result.steps:,} steps in {result.wall_seconds:.1f} s; "
            f"weights {result.fingerprint[:16]}"
        )
        return
    if stopped := (result.watch.get("early_stopping") or {}).get("reason"):
        out.print(stopped)
    out.print(
        f"test accuracy {percent(m['accuracy'])}  loss {m['loss']:.4f}  "
        f"({m['num_examples']:,} test images)"
    )
    if best := result.watch.get("best"):
        out.print(
            f"best model: {best['path']} (step {best['step']:,}, {best['monitor']} "
            f"{best['value']:.4g}): test accuracy {percent(best['test_accuracy'])}  "
            f"loss {best['test_loss']:.4f}"
        )
    if result.start_step:
        out.print(
            f"resumed at step {result.start_step:,}; {result.steps:,} steps, "
            f"{passes(result.steps, result.steps_per_epoch)} in all; "
            f"this session {result.wall_seconds:.1f} s wall "
            f"({result.images_per_second:,.0f} images/s); "
            f"{result.train_seconds:.1f} s training over all sessions"
        )
    else:
        out.print(
            f"{result.steps:,} steps, {passes(result.steps, result.steps_per_epoch)} in "
            f"{result.wall_seconds:.1f} s wall "
            f"({result.train_seconds:.1f} s training, {result.images_per_second:,.0f} images/s)"
        )
    out.print(f"run directory: {result.run_dir}  (weights {result.fingerprint[:16]})")
    out.print(f"next: dlintro eval {result.run_dir}")


def _load_before_tensorflow(path: Path, overrides: list[str], resume: Path | None = None) -> Any:
    """The config, its own errors found before TensorFlow starts; in between, the oneDNN switch,
    which TensorFlow reads once, when first imported (the names check imports the registries,
    hence TensorFlow). A resumed run keeps the switch it started with."""
    from dlintro import config as config_mod
    from dlintro import onednn

    config_mod.load(path, overrides, check_names=False)
    onednn.prepare(_recorded_onednn(resume) if resume is not None else None)
    return config_mod.load(path, overrides)


def _recorded_onednn(run_dir: Path) -> object:
    """The oneDNN switch a run recorded in its meta.json (None if it recorded none)."""
    from dlintro import runs

    try:
        return runs.read_meta(run_dir).get("onednn")
    except (UserError, AttributeError):
        return None  # the resume itself reports a damaged meta.json


@app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handled
def launch(
    ctx: typer.Context,
    workers: Annotated[
        int,
        typer.Option("--workers", "-n", min=1, max=64, help="How many worker processes to start."),
    ] = 2,
) -> None:
    """Train on N local worker processes (multi-worker on one machine, over 127.0.0.1).

    Everything after the options is passed to `dlintro train` in each worker; worker 0 is the
    chief and alone writes the run. If one worker fails, the others are stopped.

    Example: dlintro launch --workers 2 configs/mnist_conv.yaml --epochs 1
    """
    from dlintro import launch as launch_mod
    from dlintro import onednn

    onednn.prepare()  # once here: the workers inherit the switch and agree on it

    if not ctx.args:
        raise UserError("give the train arguments, e.g. dlintro launch --workers 2 CONFIG")
    code = launch_mod.launch(workers, list(ctx.args), lambda line: out.print(line, markup=False))
    if code:
        err.print(f"error: launch: a worker failed (exit {code})", style="red", markup=False)
        raise typer.Exit(code)


@app.command("tune")
@handled
def tune_(
    config: Annotated[
        Path,
        typer.Argument(help="A YAML config, such as configs/mnist_conv.yaml.", show_default=False),
    ],
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    as_run: Annotated[
        bool,
        typer.Option(
            "--as-run",
            help="Decide as `dlintro train` would: within the run's probing budget (a tenth of "
            "its expected time, 4 s to 2 minutes), from the cache where that suffices.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Measure what `auto` would choose for XLA, precision and steps per call, without training.

    Every candidate of the config's auto keys runs a few compiled steps of the real model,
    batch and input path; the table shows images/s, and the cache that `train` reads is
    updated. Explicit values in the config (or --set) are not probed. With --as-run, only
    what the training run would measure is measured (and a later run decides from the cache).

    Example: dlintro tune configs/mnist_conv.yaml
    """
    cfg = _load_before_tensorflow(config, list(set_ or []))
    from dlintro import onednn, tune

    switch = onednn.current()
    from dlintro.trainer import Trainer

    trainer = Trainer(cfg, data_dir)
    try:
        decision = trainer.measure_execution(everything=not as_run)
    finally:
        trainer.close()
    cpu = tune.cpu_facts()
    if json_:
        record = {**decision.to_dict(), "cpu": cpu, "onednn": switch.to_dict()}
        sys.stdout.write(json.dumps(record) + "\n")
        return
    out.print(f"{cfg.name} on {cpu['model']} ({', '.join(cpu['flags']) or 'no vector flags'})")
    out.print(switch.line(), markup=False)
    if not decision.trials:
        out.print(decision.line())
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("XLA", "precision", "steps per call", "images/s", ""):
        table.add_column(column, justify="right" if column == "images/s" else "left")
    for trial in sorted(decision.trials, key=lambda t: -t.images_per_second):
        c = trial.choice
        table.add_row(
            "on" if c.jit_compile else "off", c.precision, str(c.steps_per_execution),
            f"{trial.images_per_second:,.0f}", "<- auto" if c == decision.choice else "",
        )  # fmt: skip
    out.print(table)
    if as_run:
        out.print(decision.line(), markup=False)


@app.command("env")
@handled
def env_(json_: JsonOpt = False) -> None:
    """Versions, devices (physical and logical), threads, and the strategy `auto` would pick.

    Example: dlintro env --json
    """
    from dlintro import distribute

    info = distribute.environment()
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
