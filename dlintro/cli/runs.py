"""The commands that look at runs: `eval` (test metrics and confusion), `runs` (every run at
a glance), `compare` (two runs side by side) and `board` (TensorBoard on them)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
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
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Evaluate on this image folder instead (class folders named after the run's "
            "classes, or its test/ split); the report goes to RUN/report-<folder>/.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate a trained run on its test set: accuracy, loss, per-class accuracy, confusion.

    Example: dlintro eval runs/mnist_conv-20260101-120000 --json
    """
    from dlintro import evaluate

    if data is None:
        metrics = evaluate.evaluate_run(run_dir, data_dir)
    else:
        metrics = evaluate.evaluate_folder(run_dir, data)
    report_path = evaluate.report_path(run_dir, data)
    if json_:
        sys.stdout.write(json.dumps(metrics | _class_scores(metrics, report_path)) + "\n")
        return
    _render_metrics(metrics)
    out.print(f"report: {report_path}")


def _class_scores(m: dict[str, Any], report_path: Path) -> dict[str, Any]:
    """What `eval --json` adds to metrics.json: per-class precision, recall and F1, their
    macro averages (as the report computes them) and the report's path."""
    import numpy as np

    from dlintro import scores

    per_class = scores.class_scores(np.asarray(m["confusion_matrix"]), list(m["class_names"]))

    def mean(key: str) -> float:
        return round(sum(s[key] for s in per_class) / len(per_class), 6) if per_class else 0.0

    return {
        "per_class": per_class,
        "macro_precision": mean("precision"),
        "macro_recall": mean("recall"),
        "macro_f1": mean("f1"),
        "report": str(report_path),
    }


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
        if r.get("damage"):  # which file and key (rich markup would take [0] for a tag)
            what = escape(r["damage"])
        table.add_row(
            f"[bold]{r['name']}[/bold]\n  [dim]{what}[/dim]",
            f"[{colors.get(state, 'yellow')}]{state}[/]",
            percent(r.get("test_accuracy")),
            percent(r.get("best_val_accuracy")),
            steps,
            runlist.duration(r.get("wall_seconds")),
        )
    out.print(table)


def metric_cell(value: Any, key: str = "") -> str:
    """A value for the compare tables: a config value as YAML would show it (key ""), or a
    result formatted for its metric (images/s as '34,270', never '3.427e+04')."""
    if value is None:
        return "-" if key else "null"
    if isinstance(value, float) and "accuracy" in key:
        return percent(value)
    if isinstance(value, float) and key == "images_per_second":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.1f}" if "seconds" in key else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


def metric_delta(a: Any, b: Any, key: str) -> str:
    """b - a for a metric, signed: percentage points ('+0.07 pp') for accuracies; '-' unless
    both are numbers."""
    if not (isinstance(a, int | float) and isinstance(b, int | float)) or isinstance(a, bool):
        return "-"
    if "accuracy" in key:
        text = f"{(b - a) * 100:+.2f} pp"
    else:
        text = metric_cell(b - a, key)
        text = text if text.startswith("-") else "+" + text
    return text


def _letter(i: int) -> str:
    """A, B, ..., Z, then R27, R28, ..."""
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


@app.command("compare")
@handled
def compare(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Two or more run directories written by 'dlintro train'; the first is the "
            "baseline the others' differences are taken from.",
            show_default=False,
        ),
    ],
    json_: JsonOpt = False,
) -> None:
    """Compare runs: the config keys in which they differ and their results side by side.

    Example: dlintro compare runs/mnist_conv-20260101-120000 runs/mnist_fast-20260102-090000
    """
    from dlintro import runlist

    c = runlist.compare(*run_dirs)
    if json_:
        sys.stdout.write(json.dumps(c) + "\n")
        return
    letters = [_letter(i) for i in range(len(c["runs"]))]
    runs_table = Table.grid(padding=(0, 1))
    runs_table.add_column(style="bold")
    runs_table.add_column(overflow="fold")
    runs_table.add_column(overflow="fold")
    for tag, r in zip(letters, c["runs"], strict=True):
        runs_table.add_row(tag, r["path"], f"{r['status']}, {r.get('model')} on {r.get('dataset')}")
    out.print(runs_table)
    if c["config_diff"]:
        table = Table(title="config differences", box=None, header_style="bold")
        table.add_column("key", overflow="fold")
        for tag in letters:
            table.add_column(tag, overflow="fold")
        for d in c["config_diff"]:
            table.add_row(d["key"], *(metric_cell(v) for v in d["values"]))
        out.print(table)
    else:
        out.print("the configs are the same")
    table = Table(title="results", box=None, header_style="bold")
    table.add_column("metric")
    two = len(letters) == 2
    for tag in letters:
        table.add_column(tag, justify="right")
    if two:
        table.add_column("B - A", justify="right")
    for m in c["metrics"]:
        values, key = m["values"], m["metric"]
        cells = [metric_cell(values[0], key)]
        for v in values[1:]:  # more than two runs: each difference from A under its value
            cells.append(
                metric_cell(v, key)
                if two
                else f"{metric_cell(v, key)}\n[dim]{metric_delta(values[0], v, key)}[/dim]"
            )
        if two:
            cells.append(metric_delta(values[0], values[1], key))
        table.add_row(m["name"], *cells)
    out.print(table)
    if not two:
        out.print("[dim]under each value: its difference from A (pp: percentage points)[/dim]")
