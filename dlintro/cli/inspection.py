"""The commands that look before training: `summary` (a model's layers and arithmetic),
`models` and `datasets` (what is registered and cached) and `preview` (augmented images)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlintro.cli.common import ConfigArg, DataDirOpt, JsonOpt, SetOpt, app, err, handled, out
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
    if out_path.exists() and out_path.is_dir():  # before the data is loaded
        raise UserError(f"{out_path}: is a directory; give a file name such as grid.png")
    from dlintro.data import preview as preview_mod

    grid = preview_mod.augmented_grid(cfg.data, cfg.seed, data_dir, rows=rows, cols=cols)
    preview_mod.write_png(out_path, grid)  # a UserError when it cannot write
    augment = ", ".join(a.name for a in cfg.data.augment) or "no augmentation"
    out.print(f"wrote {out_path} ({rows}x{cols} {cfg.data.dataset} training images; {augment})")


@app.command("models")
@handled
def models_(json_: JsonOpt = False) -> None:
    """List the registered models and their parameters.

    Example: dlintro models
    """
    from dlintro import models

    rows = []
    for name in models.MODELS.names():
        meta = models.MODELS.meta(name)
        params = [p for p in models.MODELS.params(name)]
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


@app.command("datasets")
@handled
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
