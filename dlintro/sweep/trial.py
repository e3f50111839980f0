"""One trial: an ordinary dlintro run in the sweep folder (`trial-NNN/`), trained with the
sweep's base config, trial overrides and the trial's values, reporting its validation metric
after every epoch to the study's pruner, which may stop it (`pruned` in its meta.json). And
`work`, the loop of one process: trials until the budget is spent.

A trial that was handed on (its process was stopped or killed, dlintro.sweep.study) is resumed
from its run's last checkpoint when that run is on this machine (a run already finished or
pruned is only recorded), and rerun in a new directory otherwise.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlintro import runs
from dlintro.errors import DlintroError, UserError
from dlintro.events import EpochEnd, RunStart, StepProgress
from dlintro.sweep import study as study_mod
from dlintro.sweep.space import Sweep

Emit = Callable[[str], None]


class Pruned(DlintroError):
    """The pruner stopped the trial; the trainer records `run_status` in meta.json."""

    run_status = "pruned"


class TakenOver(DlintroError):
    """Another process failed this trial as stale (no heartbeat for long): stop it here."""


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def values_line(values: dict[str, Any]) -> str:
    """'optimizer.learning_rate=0.003, data.batch_size=64'."""
    return ", ".join(f"{k}={_number(v)}" for k, v in values.items())


class TrialReporter:
    """A Reporter that passes everything on to `inner` and reports each epoch's objective to
    the trial; raises Pruned when the pruner says so."""

    def __init__(self, trial: Any, objective: str, inner: Any, meta: dict[str, Any]) -> None:
        self.trial, self.objective, self.inner, self.meta = trial, objective, inner, meta
        self.last: float | None = None
        self.epoch = 0

    def report(self, value: float, epoch: int) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        if not math.isfinite(value):
            raise DlintroError(f"{self.objective} is {value} at epoch {epoch}: no validation set")
        try:
            self.trial.report(value, epoch)
        except UpdateFinishedTrialError:
            raise TakenOver(
                f"trial {self.trial.number} was taken over by another process"
            ) from None
        self.last, self.epoch = value, epoch

    def start(self, plan: RunStart) -> None:
        runs.update_meta(plan.run_dir, sweep=self.meta)
        for row in runs.read_history(plan.run_dir):  # a resumed run: the epochs it has done
            self.report(float(row[self.objective]), int(row["epoch"]))
        self.inner.start(plan)

    def update(self, logs: StepProgress) -> None:
        self.inner.update(logs)

    def epoch_end(self, logs: EpochEnd) -> None:
        self.inner.epoch_end(logs)
        self.report(float(getattr(logs, self.objective)), logs.epoch)
        if self.trial.should_prune():
            raise Pruned(
                f"pruned at epoch {logs.epoch}: {self.objective} {self.last:.4f} is worse than "
                "the pruner allows at this epoch"
            )

    def end(self) -> None:
        self.inner.end()


def _tell(study: Any, trial: Any, value: float | None = None, state: Any = None) -> None:
    """The trial's end, recorded (again after a pause while the database is busy)."""
    study_mod.retry(lambda: study.tell(trial, value, state=state, skip_if_finished=True))


def _resumable(trial: Any, out: Path) -> Path | None:
    """The run directory of the trial this one replaces, when it is here to be resumed."""
    name, host = trial.user_attrs.get("resume"), trial.user_attrs.get("resume_host")
    if not name or host != socket.gethostname():
        return None
    path = out / str(name)
    return path if (path / "meta.json").is_file() and (path / "config.yaml").is_file() else None


def _train(
    trial: Any, sweep: Sweep, out: Path, values: dict[str, Any], reporter: TrialReporter,
    common: dict[str, Any], emit: Emit,
) -> Path:  # fmt: skip
    """Train (or resume, or only record) the trial's run; return its directory."""
    from dlintro import config, train

    path = _resumable(trial, out)
    if path is not None:
        trial.set_user_attr("run_dir", path.name)
        status = runs.read_meta(path).get("status")
        if status in ("finished", "pruned"):  # done before its process died: record it
            for row in runs.read_history(path):
                reporter.report(float(row[sweep.objective]), int(row["epoch"]))
            if status == "pruned":
                raise Pruned(f"pruned at epoch {reporter.epoch} (before the resume)")
            return path
        try:
            train.resume(path, reporter=reporter, **common)
            return path
        except UserError as exc:  # refused before training (e.g. a damaged checkpoint)
            emit(f"trial {trial.number}: {path.name} cannot be resumed ({exc}); run anew")
    path = out / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", path.name)
    cfg = config.load(data=sweep.trial_raw(values), check_names=False)
    train.run(cfg, run_dir=path, reporter=reporter, **common)
    return path


def run_one(
    opened: study_mod.Opened, sweep: Sweep, out: Path, trials: int, emit: Emit,
    inner: Any, data_dir: str | Path | None, command: list[str],
) -> str:  # fmt: skip
    """Ask for a trial and run it; return what became of it (complete, pruned, failed, over).

    Ctrl-C or SIGTERM hands the trial on (it resumes next time) and raises Interrupted; a
    UserError (bad data, a config the trainer refuses) gives the trial back and is raised.
    """
    import keras
    import tensorflow as tf
    from optuna.trial import TrialState

    from dlintro.board import writer
    from dlintro.stop import Interrupted

    study = opened.study
    trial = study_mod.retry(study.ask)
    if study_mod.over_budget(study, trial.number, trials):
        trial.set_user_attr("void", "asked for after the budget was spent")
        _tell(study, trial, state=TrialState.FAIL)
        return "over"
    values = {p.key: p.suggest(trial) for p in sweep.params}
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", socket.gethostname())
    resumed = trial.user_attrs.get("resume")
    emit(f"trial {trial.number} started: {values_line(values)}"
         + (f" (resuming {resumed})" if resumed else ""))  # fmt: skip
    keras.backend.clear_session()  # a fresh graph and name counters for every trial
    tf.get_logger().setLevel("ERROR")  # new tf.functions per trial are not "retracing"
    writer.EXTRA_HPARAMS.clear()
    writer.EXTRA_HPARAMS.update({k: v if isinstance(v, bool | int | float | str) else str(v)
                                 for k, v in values.items()})  # fmt: skip
    meta = {"study": sweep.name, "trial": trial.number, "values": values}
    reporter = TrialReporter(trial, sweep.objective, inner, meta)
    common = {"data_dir": data_dir, "command": command, "started": time.time()}
    t0 = time.time()
    with study_mod.Heartbeat(opened, trial.number):
        try:
            path = _train(trial, sweep, out, values, reporter, common, emit)
        except Pruned as exc:
            _tell(study, trial, state=TrialState.PRUNED)
            emit(f"trial {trial.number} {exc} ({time.time() - t0:.0f} s)")
            return "pruned"
        except TakenOver as exc:
            emit(f"trial {trial.number}: {exc}")
            return "taken over"
        except (Interrupted, KeyboardInterrupt):
            study_mod.hand_on(opened, trial.number)
            emit(f"trial {trial.number} stopped; it resumes from its checkpoint next time")
            raise
        except UserError:
            trial.set_user_attr("void", "refused as input")
            _tell(study, trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # NonFiniteLoss, a builder's refusal, ...: the next trial
            msg = " ".join(str(exc).split())[:300]
            trial.set_user_attr("error", msg)
            _tell(study, trial, state=TrialState.FAIL)
            emit(f"trial {trial.number} failed: {type(exc).__name__}: {msg}")
            return "failed"
        finally:
            writer.EXTRA_HPARAMS.clear()
    if reporter.last is None:
        trial.set_user_attr("error", "no validation was recorded")
        _tell(study, trial, state=TrialState.FAIL)
        emit(f"trial {trial.number} failed: no validation was recorded")
        return "failed"
    _tell(study, trial, reporter.last)
    emit(
        f"trial {trial.number} finished: {sweep.objective} {reporter.last:.4f} after "
        f"{reporter.epoch} epoch(s) ({time.time() - t0:.0f} s) in {path.name}"
    )
    return "complete"


def work(
    opened: study_mod.Opened, sweep: Sweep, out: Path, trials: int, deadline: float | None,
    emit: Emit, inner: Any, data_dir: str | Path | None = None,
    command: list[str] | None = None,
) -> int:  # fmt: skip
    """Run trials until the study holds `trials` (or `deadline`, a time.time(), passes);
    return how many this process ran. Dead processes' trials are handed on first."""
    done = 0
    while True:
        for number in study_mod.reclaim(opened):
            emit(f"trial {number}: its process is gone; it is resumed as a new trial")
        if deadline is not None and time.time() >= deadline:
            emit("time limit reached (sweep.minutes): no new trials")
            return done
        if not study_mod.budget_left(opened.study, trials):
            return done
        outcome = run_one(opened, sweep, out, trials, emit, inner, data_dir, command or [])
        if outcome == "over":
            return done
        done += 1
