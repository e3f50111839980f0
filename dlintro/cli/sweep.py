"""The `sweep` command: search a config's keys with Optuna (`dlintro sweep SWEEP.yaml`), or show
a sweep's results (`dlintro sweep --show SWEEP_DIR`). Optuna and TensorFlow are imported
inside the command."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlintro.cli.common import DataDirOpt, JsonOpt, SetOpt, app, handled, out, percent
from dlintro.errors import UserError


@app.command("sweep")
@handled
def sweep(
    sweep_file: Annotated[
        Path | None,
        typer.Argument(
            help="A sweep file, such as configs/sweeps/mnist_conv_lr.yaml.", show_default=False
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Trials in the study (overrides sweep.trials)."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, max=64, help="Trials at once, in separate processes.")
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage URL shared by every process of the study, e.g. "
            "postgresql://user:pass@host/db (default: SQLite in the sweep folder).",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="The sweep folder (default runs/sweep-<sweep file name>)."),
    ] = None,
    set_: SetOpt = None,
    show: Annotated[
        Path | None,
        typer.Option("--show", help="Show this sweep folder's trials; write best.yaml, sweep.png."),
    ] = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Search hyperparameters: each trial is a run in the sweep folder; pruned trials stop early.

    The same command resumes an interrupted sweep (Ctrl-C or kill -9): finished trials stay,
    a running one resumes from its checkpoint. Several processes (--jobs, or other machines
    with the same --storage) share one study.

    Example: dlintro sweep configs/sweeps/mnist_conv_lr.yaml --jobs 2

    Example: dlintro sweep --show runs/sweep-mnist_conv_lr
    """
    if show is not None:
        if sweep_file is not None or set_ or trials is not None:
            raise UserError("--show SWEEP_DIR takes no SWEEP file, --set or --trials")
        _show(show, storage, json_)
        return
    if sweep_file is None:
        raise UserError("give a SWEEP file to run, or --show SWEEP_DIR")
    from dlintro import onednn, runs
    from dlintro.sweep import study as study_mod
    from dlintro.sweep import sweepfile

    onednn.prepare()  # before the sweep file's checks import TensorFlow, which reads it once
    sw = sweepfile.load(sweep_file, list(set_ or []))
    budget = trials or sw.trials
    folder = out_dir or runs.default_root() / f"sweep-{sw.name}"
    url, opened = study_mod.prepare(sw, folder, storage)
    deadline = time.time() + 60 * sw.minutes if sw.minutes else None
    done = len(study_mod.counted(opened.study.get_trials(deepcopy=False)))
    out.print(
        f"sweep {sw.name}: {budget} trials ({done} in the study) of "
        f"{', '.join(p.key for p in sw.params)}; {sw.objective} ({sw.direction}), "
        f"sampler {sw.sampler['name']}, pruner {sw.pruner['name']}, {jobs} job(s); "
        f"folder {folder}, storage {study_mod.shown_url(url)}",
        markup=False,
    )
    again = "dlintro " + shlex.join(sys.argv[1:])
    code = _run(opened, sw, folder, url, budget, deadline, jobs, data_dir)
    _render(opened.study, sw, folder, json_=False)
    if code:
        if code >= 128:
            out.print(f"stopped; resume the sweep with: {again}", markup=False)
        raise typer.Exit(code)


def _run(
    opened: Any, sw: Any, folder: Path, url: str, budget: int, deadline: float | None,
    jobs: int, data_dir: Path | None,
) -> int:  # fmt: skip
    """Run the trials here (one job) or in worker processes; the exit code."""
    from dlintro.stop import Interrupted
    from dlintro.sweep import jobs as jobs_mod
    from dlintro.sweep import trial

    def emit(line: str) -> None:
        out.print(line, markup=False, soft_wrap=True)

    if jobs > 1:
        return jobs_mod.run_jobs(folder, url, jobs, budget, deadline, data_dir, sys.argv, emit)
    from dlintro.progress import make_reporter

    try:
        trial.work(opened, sw, folder, budget, deadline, emit, make_reporter(out), data_dir,
                   sys.argv)  # fmt: skip
    except Interrupted as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def _show(folder: Path, storage: str | None, json_: bool) -> None:
    from dlintro.sweep import study as study_mod
    from dlintro.sweep.space import Sweep

    spec = study_mod.read_spec(folder)
    sw = Sweep.from_dict(spec["sweep"])
    url = storage or spec.get("storage") or study_mod.default_storage(folder)
    if "***" in url:
        raise UserError(f"{folder}: its study is in {url}: give --storage with the password")
    opened = study_mod.open_study(sw, url, create=False)
    _render(opened.study, sw, folder, json_)


def _render(study: Any, sw: Any, folder: Path, json_: bool) -> None:
    """The trials table (best first), then best.yaml and sweep.png written and named."""
    from dlintro.sweep import show

    table = show.rows(study, sw)
    best = show.best(study, sw)
    best_path = show.write_best(sw, best, folder) if best is not None else None
    figure = show.figure(table, sw, folder)
    if json_:
        record = {
            "study": sw.name, "objective": sw.objective, "direction": sw.direction,
            "trials": table, "best": None if best is None else {
                "trial": best.number, sw.objective: best.value, "values": best.params,
                "config": str(best_path)},
            "figure": str(figure) if figure else None,
        }  # fmt: skip
        sys.stdout.write(json.dumps(record) + "\n")
        return
    obj = sw.objective
    grid = Table(box=None, pad_edge=False, header_style="bold")
    short = [p.key.rsplit(".", 1)[-1] for p in sw.params]
    names = short if len(set(short)) == len(short) else [p.key for p in sw.params]
    for col in ("trial", "state", obj, *names, "epochs", "time", "run"):
        left = col in ("state", "run")
        width = 9 if col == "run" else None  # trial-NNN
        grid.add_column(col, justify="left" if left else "right", no_wrap=True, min_width=width)
    colors = {"complete": "green", "pruned": "yellow", "failed": "red", "running": "cyan",
              "waiting": "cyan"}  # fmt: skip
    for r in table:
        v = r[obj]
        shown = "-" if v is None else (percent(v) if "accuracy" in obj else f"{v:.4f}")
        values = [_value(r["values"].get(p.key)) for p in sw.params]
        seconds = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "-"
        state = r["state"] + (f": {r['error'][:40]}" if r["error"] else "")
        grid.add_row(str(r["trial"]), f"[{colors.get(r['state'], 'white')}]{state}[/]",
                     shown, *values, str(r["epochs"]), seconds, r["run_dir"] or "-")  # fmt: skip
    out.print(grid)
    counts = {s: sum(r["state"] == s for r in table) for s in colors}
    out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no trials yet")
    if best_path is not None:
        out.print(f"best: trial {best.number}, {obj} {best.value:.4f}; config {best_path}",
                  markup=False)  # fmt: skip
        out.print(f"next: dlintro train {best_path}", markup=False)
    if figure is not None:
        out.print(f"figure: {figure}; the trials' runs: dlintro runs {folder}", markup=False)


def _value(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
