"""The commands that look before training: `summary` (a model's layers and arithmetic),
`models`, `list` and `datasets` (what is registered and cached) and `preview` (augmented
images)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlintro.cli.common import DataDirOpt, JsonOpt, SetOpt, app, err, handled, out
from dlintro.errors import UserError


@app.command("summary")
@handled
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


@app.command("preview")
@handled
def preview(
    target: Annotated[
        Path,
        typer.Argument(
            help="A YAML config, or a run directory (its config.yaml).", show_default=False
        ),
    ],
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the PNG (default for a run directory: RUN/preview.png; "
            "a config needs --out).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    rows: Annotated[
        int,
        typer.Option(
            "--rows", min=1, max=16, help="Rows of images (each original above its augmented copy)."
        ),
    ] = 4,
    cols: Annotated[int, typer.Option("--cols", min=1, max=16, help="Images per row.")] = 8,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write a labelled PNG of training images before and after augmentation: what the model
    sees, with each image's class.

    Example: dlintro preview configs/mnist_keras_cnn_augmented.yaml --out augmented.png
    """
    from dlintro import config as config_mod
    from dlintro import runs

    recorded = None
    if target.is_dir():
        runs.open_run(target)
        recorded = runs.recorded_data_root(target)
        out_path = out_path or target / "preview.png"
    elif out_path is None:
        raise UserError(
            f"{target}: give --out FILE.png for the preview of a config "
            "(only a run directory has a place of its own for it)"
        )
    cfg = config_mod.load(target, list(set_ or []))
    if out_path.is_dir():  # before the data is loaded
        raise UserError(f"{out_path}: is a directory; give a file name such as grid.png")
    if out_path.exists() and not force:
        raise UserError(
            f"{out_path}: already exists; give --force to overwrite it, or another --out"
        )
    from dlintro import figures
    from dlintro.data import preview as preview_mod
    from dlintro.data.sources import data_root

    data_dir = data_root(data_dir, recorded)  # a run's own data directory in a new shell
    drawn = preview_mod.sample(cfg.data, cfg.seed, data_dir, count=rows * cols)
    augment = ", ".join(drawn.augmentations) or "no augmentation"
    title = f"{cfg.data.dataset} training images, seed {cfg.seed}: {augment}"
    preview_mod.write_file(out_path, figures.preview_png(drawn, cols=cols, title=title))
    shown = "originals above augmented" if drawn.augmented is not None else "no augmentation"
    out.print(
        f"wrote {out_path} ({len(drawn.originals)} {cfg.data.dataset} training images, "
        f"{shown}; {augment})"
    )


@app.command("models")
@handled
def models_(json_: JsonOpt = False) -> None:
    """List the registered models: family, default input, parameter count, description.

    A model's count is at the input of the data its recipe was published on (MNIST, CIFAR-10 or
    ImageNet); `dlintro summary` gives it for any config. `dlintro list models` lists each
    model's own parameters (model.params).

    Example: dlintro models
    """
    from dlintro import listing

    counts = {c.name: c for c in listing.count_parameters()}
    rows = []
    for e in listing.entries("models"):
        c = counts[e.name]
        rows.append({
            "name": e.name, "family": e.group, "description": e.description,
            "params": list(e.params), "parameters": c.parameters,
            "trainable_parameters": c.trainable, "dataset": c.dataset,
            "input_shape": list(c.input_shape), "num_classes": c.num_classes,
            "problem": c.problem,
        })  # fmt: skip
    if json_:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="models (model.name); parameters at the default input", box=None)
    table.add_column("name", no_wrap=True)
    table.add_column("family")
    table.add_column("input", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("description")
    for r in rows:
        shape = "x".join(str(d) for d in r["input_shape"])
        count = "-" if r["parameters"] is None else f"{r['parameters']:,}"
        table.add_row(escape(r["name"]), r["family"], shape, count, escape(r["description"]))
    out.print(table)


@app.command("list")
@handled
def list_(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="models, datasets, optimizers, schedules or augmentations (default: all).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List every registered name of a kind with a one-line description and its parameters.

    Example: dlintro list schedules
    """
    from dlintro import listing

    kinds = [listing.kind_of(kind)] if kind is not None else list(listing.KINDS)
    found = {k: listing.entries(k) for k in kinds}
    if json_:
        data = {k: [e.to_dict() for e in v] for k, v in found.items()}
        sys.stdout.write(json.dumps(data) + "\n")
        return
    for k, entries in found.items():
        key = listing.KINDS[k][2]
        table = Table(title=f"{k} ({key}; parameters in {listing.PARAMS_KEY[k]})", box=None)
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("description")
        table.add_column("parameters (defaults)")
        for e in entries:
            params = ", ".join(
                f"{p} (required)" if v == listing.REQUIRED else f"{p}={json.dumps(v)}"
                for p, v in e.params.items()
            )
            table.add_row(escape(e.name), escape(e.description), escape(params or "-"))
        out.print(table)


@app.command("datasets")
@handled
def datasets(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these datasets (default: all).", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the size and SHA-256 of every file; exit 1 if one is missing or wrong.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """List datasets, where each is cached, and whether its files are present.

    Example: DLINTRO_DATA_DIR=../shared/datasets dlintro datasets --verify mnist
    """
    from dlintro.data import download, sources

    root = sources.data_root(data_dir)
    chosen = list(names or sources.DATASETS.names())
    for name in chosen:
        sources.DATASETS.get(name)  # an unknown name: one line with the valid ones
    rows = []
    for name in chosen:
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
    bad = [(r["name"], v) for r in rows for v in r.get("verified", []) if not v["ok"]]
    for name, v in bad:
        err.print(
            f"error: {name}: {v['path']}: {v['problem']}", soft_wrap=True, markup=False, style="red"
        )
    if bad:
        missing = sum(not v["present"] for _, v in bad)
        err.print(
            f"{len(bad)} file(s) failed verification ({missing} missing); missing files are "
            "downloaded on first use, unless DLINTRO_OFFLINE=1",
            soft_wrap=True, markup=False,
        )  # fmt: skip
        raise typer.Exit(1)


def _files_state(row: dict[str, Any]) -> str:
    """The files column of `datasets`: '3/4 present, 3/4 checksums ok', or a note."""
    if not row["needs_files"]:
        return row.get("files_note") or "no files"
    files = row["files"]
    present = sum(f["present"] and f["size_ok"] for f in files)
    state = f"{present}/{len(files)} present"
    if "verified" in row:
        ok = sum(v["ok"] for v in row["verified"])
        state += f", {ok}/{len(files)} checksums ok"
    return state
