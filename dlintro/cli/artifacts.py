"""The commands that use a trained model: `predict` (classify image files) and `export` (an
artifact with the preprocessing built in, checked against Keras). The request checks live in
the API (predict.predict_files, export.export_run), so scripts get the same messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlintro.cli.common import DataDirOpt, RunArg, app, err, handled, out, percent
from dlintro.errors import DlintroError, UserError


@app.command("predict")
@handled
def predict(
    run_dir: RunArg,
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
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Also write the predictions to this CSV file (replaced if it exists): file, "
            "class, name, confidence, then top2_class, top2_name, top2_probability, ... up to "
            "--top-k.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Classify image files with a trained run, preprocessed exactly as in training.

    Unreadable files are reported on stderr, one line each (exit code 2); the others are predicted.

    Example: dlintro predict runs/mnist_conv-20260101-120000 my_digits/ photo.jpg --top-k 3
    """
    from rich.markup import escape

    from dlintro import predict as predict_mod

    result = predict_mod.predict_files(run_dir, list(images), top_k, invert, csv_path)
    if json_:
        sys.stdout.write(json.dumps(result.predictions) + "\n")
    else:
        k = max(len(p["top"]) for p in result.predictions)
        table = Table(title=f"top-{k} classes of {len(result.predictions)} image(s)", box=None)
        table.add_column("file", overflow="fold")
        for i in range(k):
            table.add_column(f"#{i + 1}", no_wrap=True)
        for p in result.predictions:
            cells = [
                f"{escape(t['name'])} [bold]{percent(t['probability'], 1)}[/bold]" for t in p["top"]
            ]
            table.add_row(escape(p["file"]), *cells)
        out.print(table)
        special = sum(result.mnist_way)
        if special:
            out.print(
                f"{special} image(s) inverted and centred the MNIST way (--invert no to turn off)"
            )
    if csv_path is not None:  # on stderr with --json, which keeps stdout to the JSON
        (err if json_ else out).print(
            f"wrote {csv_path} ({len(result.predictions)} row(s))", markup=False
        )
    for path, why in result.failed:
        err.print(f"error: {path}: {why}", soft_wrap=True, markup=False, style="red")
    if result.failed:
        raise typer.Exit(2)


@app.command("export")
@handled
def export(
    run_dir: RunArg,
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
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Skip the parity check (the artifact is not compared with the Keras model).",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a run's model with its preprocessing built in, then check parity with Keras.

    The artifact takes uint8 images of the run's input shape and returns class probabilities.

    Parity: up to 300 test images through the artifact's own runtime; exit code 1 unless
    float32: max |Δp| <= 1e-4, 100% top-1 agreement; float16: 1e-2, 99%; int8: 0.1, 97%.

    The check uses the test images saved with the run (sample.npz): the dataset is not
    needed; with --data-dir it uses the dataset's test images instead.

    Example: dlintro export runs/mnist_conv-20260101-120000 --format tflite --quantize int8
    """
    from rich.markup import escape

    from dlintro import export as export_mod

    if format_ is None:  # the option is optional only to say this; the API requires a format
        from dlintro import runs

        runs.open_run(run_dir)  # a bad run directory is still named first
        raise UserError(f"give --format {'|'.join(export_mod.FORMATS)}")
    r = export_mod.export_run(
        run_dir, format_, quantize, out_path, force, data_dir, check=not no_check
    )
    size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes >= 1e5 else f"{r.size_bytes / 1e3:.1f} KB"
    kind = f"{r.format} {r.quantize}" if r.quantize else r.format
    out.print(
        f"wrote {r.path} ({kind}, {size}): input uint8 [batch, "
        f"{', '.join(map(str, r.input_shape))}] with the run's normalization built in, "
        f"output {r.num_classes} class probabilities",
        markup=False,
    )
    out.print(
        f"wrote {r.info_path} (input, output, the preprocessing left to the caller with its "
        "code, class names, normalization, parity)",
        markup=False,
    )
    if r.parity is None:
        out.print(f"parity: not checked ({export_mod.UNCHECKED})", markup=False)
        return
    p, tol = r.parity, r.parity.tolerance
    verdict = "[green]passed[/green]" if p.passed else "[red]FAILED[/red]"
    out.print(
        f"parity with the Keras model on {p.num_images} {escape(p.images)} ({p.runtime}): "
        f"max |Δp| {p.max_abs_diff:.2e} (limit {tol.max_abs_diff:.0e}), "
        f"mean {p.mean_abs_diff:.1e}, top-1 agreement {percent(p.top1_agreement)} "
        f"(limit {percent(tol.min_top1_agreement, 0)}): {verdict}"
    )
    if not p.passed:
        raise DlintroError(
            f"{r.path}: parity check failed (above the {kind} tolerance); the artifact is kept "
            "for inspection"
        )
