"""A sweep's results: the trials sorted by the objective, the best config as a YAML that
`dlintro train` takes as is (`best.yaml`), and a figure of the objective per trial and per
searched key (`sweep.png`), both in the sweep folder. No TensorFlow; Optuna and matplotlib
are imported inside.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from dlintro import runs
from dlintro.sweep import study as study_mod
from dlintro.sweep.space import Sweep

BEST_FILE = "best.yaml"
FIGURE_FILE = "sweep.png"
_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}


def rows(study: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per counted trial: number, state, objective value (a pruned trial: its last
    report), values, epochs reported, run directory, seconds, error; best first."""
    out = []
    for t in study_mod.counted(study.get_trials(deepcopy=False)):
        state = t.state.name.lower()
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        seconds = None
        if t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        out.append({
            "trial": t.number, "state": state, sweep.objective: value,
            "values": {p.key: t.params.get(p.key) for p in sweep.params},
            "epochs": len(t.intermediate_values),
            "run_dir": t.user_attrs.get("run_dir") or t.user_attrs.get("resume"),
            "seconds": seconds, "error": t.user_attrs.get("error"),
        })  # fmt: skip
    sign = -1.0 if sweep.direction == "maximize" else 1.0

    def key(r: dict[str, Any]) -> tuple[int, float, int]:
        v = r[sweep.objective]
        return (_ORDER.get(r["state"], 5), sign * v if v is not None else math.inf, r["trial"])

    return sorted(out, key=key)


def best(study: Any, sweep: Sweep) -> Any:
    """The complete trial with the best objective (None before one completes)."""
    from optuna.trial import TrialState

    done = [t for t in study_mod.counted(study.get_trials(deepcopy=False))
            if t.state == TrialState.COMPLETE and t.value is not None]  # fmt: skip
    if not done:
        return None
    pick = max if sweep.direction == "maximize" else min
    return pick(done, key=lambda t: t.value)


def write_best(sweep: Sweep, trial: Any, out: Path) -> Path:
    """best.yaml: the base config with the best trial's values (the trial overrides, which only
    shortened the search, left out), resolved and validated as a config."""
    from dlintro import config

    raw = sweep.best_raw(
        {p.key: trial.params[p.key] for p in sweep.params if p.key in trial.params}
    )
    raw["name"] = f"{sweep.name}-best"
    raw["description"] = (
        f"best of sweep {sweep.name}: trial {trial.number}, {sweep.objective} {trial.value:.4f}"
    )
    cfg = config.load(data=raw, check_names=False)
    shortened = ", ".join(f"{k}={v}" for k, v in sweep.trial_overrides.items())
    lines = [
        f"# The best config of sweep {sweep.name} ({sweep.source}): trial {trial.number}, "
        f"{sweep.objective} {trial.value:.4f}.",
        f"# Train it: dlintro train {out / BEST_FILE}",
    ]
    if shortened:
        lines.append(f"# The trials ran with {shortened} (sweep.trial_overrides); this config "
                     "trains the base's own length.")  # fmt: skip
    lines.append(f"# What the trial ran, exactly: {out / str(trial.user_attrs.get('run_dir'))}"
                 "/config.yaml")  # fmt: skip
    path = out / BEST_FILE
    runs.write_text(path, "\n".join(lines) + "\n" + cfg.to_yaml())
    return path


def figure(table: list[dict[str, Any]], sweep: Sweep, out: Path) -> Path | None:
    """sweep.png: the objective per trial (best so far as a line) and against each searched
    key; pruned trials at their last report, as crosses. None when nothing has a value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = [r for r in table if r[sweep.objective] is not None]
    if not shown:
        return None
    obj, n = sweep.objective, len(sweep.params) + 1
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    style = {"complete": ("o", "tab:blue"), "pruned": ("x", "tab:orange")}
    ax = axes[0]
    for state, (marker, color) in style.items():
        pts = [(r["trial"], r[obj]) for r in shown if r["state"] == state]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, color=color, label=state)
    done = sorted((r["trial"], r[obj]) for r in shown if r["state"] == "complete")
    if done:
        pick = max if sweep.direction == "maximize" else min
        so_far = [pick(v for _, v in done[: i + 1]) for i in range(len(done))]
        ax.step([t for t, _ in done], so_far, where="post", color="tab:green", label="best")
    ax.set(xlabel="trial", ylabel=obj, title=f"{sweep.name}: {obj} per trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    for ax, p in zip(axes[1:], sweep.params, strict=True):
        for state, (marker, color) in style.items():
            pts = [(r["values"][p.key], r[obj]) for r in shown
                   if r["state"] == state and r["values"].get(p.key) is not None]  # fmt: skip
            if pts:
                xs, ys = zip(*pts, strict=True)
                xs = [str(x) for x in xs] if p.kind == "choice" else xs
                ax.scatter(xs, ys, marker=marker, color=color)
        if p.log:
            ax.set_xscale("log")
        ax.set(xlabel=p.key, ylabel=obj, title=p.describe())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    path = out / FIGURE_FILE
    path.write_bytes(buf.getvalue())
    return path
