"""The commands that look at runs: `eval` (test metrics and confusion), `runs` (every run at
a glance), `compare` (two runs side by side) and `board` (TensorBoard on them)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlintro.cli.common import DataDirOpt, JsonOpt, RunArg, app, handled, out, percent
from dlintro.runs import default_root

RunsDirArg = Annotated[
    Path | None,
    typer.Argument(
        help="The directory that holds the runs (default: $DLINTRO_RUNS_DIR, else runs).",
        show_default=False,
    ),
]


@app.command("eval")
@handled
def eval_(
    run_dir: RunArg,
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


def _render_metrics(m: dict[str, Any]) -> None:
    """Accuracy and loss, then the confusion matrix with each class's accuracy."""
    out.print(
        f"test accuracy [bold]{percent(m['accuracy'])}[/bold]  loss {m['loss']:.4f}  "
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
        table.add_row(f"{i} {name}" if name != str(i) else name, *cells, percent(acc))
    out.print(table)


@app.command("board")
@handled
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

    root = runs_dir or default_root()
    _, url = board_mod.launch(root, port)
    out.print(f"TensorBoard on {root}: [bold]{url}[/bold]  (Ctrl-C to stop)")
    if not board_mod.has_logs(root):
        out.print("no TensorBoard logs there yet; they appear as runs write them")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.print("TensorBoard stopped")


@app.command("runs")
@handled
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
        out.print(f"no runs in {runs_dir or default_root()}")
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
            percent(r.get("test_accuracy")),
            percent(r.get("best_val_accuracy")),
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
        return percent(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if "seconds" in key else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


@app.command("compare")
@handled
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
