"""Training runs, the public API: `run` trains a Config into a new run directory, `resume`
continues one from its newest checkpoint (or a chosen one). Both hold the run's lock
(dlintro.runlock) for the whole training, write config.yaml and meta.json only once everything
is checked, then hand over to a Trainer (dlintro.trainer), which leaves history.csv, logs/,
checkpoints/, model.keras and metrics.json.

Printing belongs to the CLI: progress goes to a `Reporter` that the caller supplies.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlintro import checkpoint, config, runlock, runs, tune
from dlintro.config import Config
from dlintro.errors import UserError
from dlintro.record import Reporter, SilentReporter
from dlintro.stop import Interrupted
from dlintro.trainer import NonFiniteLoss, Result, Trainer

__all__ = ["Interrupted", "NonFiniteLoss", "Result", "Trainer", "resume", "run"]


def run(
    cfg: Config,
    run_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    command: list[str] | None = None,
    started: float | None = None,
) -> Result:
    """Train `cfg` from scratch in a new run directory; return the test metrics and timings.

    Input problems (data files, model arguments, the run directory) raise UserError before the
    run directory is created, so a bad invocation leaves nothing behind. The run's lock is held
    from the claim of its directory to the end (a second process claiming the same --run-dir
    is refused, naming this one). `started` (a time.time() value) is when the user's command
    began, so that wall time includes start-up.
    """
    trainer = Trainer(cfg, data_dir, started)
    try:
        trainer.build()
        if not trainer.chief:  # other workers of a multi-worker run write nothing
            return trainer.train(None, SilentReporter(), start=None)
        with runs.claim(cfg.name, run_dir) as lock:
            path = lock.run_dir
            runs.write_text(path / "config.yaml", cfg.to_yaml())
            runs.write_json(path / "meta.json", trainer.meta(command))
            return trainer.train(path, reporter or SilentReporter(), start=None)
    finally:
        trainer.close()


@dataclass(frozen=True)
class _Request:
    """A resume, checked against the run directory (nothing written yet)."""

    meta: dict[str, Any]
    cfg: Config
    changes: list[tuple[str, Any, Any]]
    start: Path | None  # the checkpoint to continue from (None: the start of the run)
    execution: dict[str, Any] | None


def resume(
    run_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    data_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    command: list[str] | None = None,
    started: float | None = None,
    from_step: int | None = None,
) -> Result:
    """Continue a run from its newest checkpoint (from the start if it has none), or from the
    checkpoint of `from_step` (0: start the run over; later checkpoints are removed).

    Overrides that would break the run (a different model, data order, batch, length or
    schedule) are refused with the list of differences unless `force` is set. Everything is
    checked before the run directory is touched (its files, the config, the checkpoint read
    whole, the data, the model against the checkpoint), under the run's lock, which is held
    until the process ends: a refused resume leaves every file as it was, and a second process
    is refused naming the first.
    """
    path = runs.open_run(run_dir)
    request = _check(path, overrides, force, from_step)
    from dlintro.data import data_root

    data_dir = data_root(data_dir, runs.recorded_data_root(path))  # also in a new shell
    trainer = Trainer(request.cfg, data_dir, started, execution=request.execution)
    try:
        trainer.build_strategy()  # first: only the chief takes the lock (and writes)
        if not trainer.chief:
            trainer.build()
            return trainer.train(None, SilentReporter(), start=request.start)
        with runlock.RunLock(path):
            if runs.read_meta(path) != request.meta:
                raise UserError(
                    f"{path}: the run changed while this resume was starting (another process "
                    "wrote it); run the command again"
                )
            trainer.build()
            step = 0
            if request.start is not None:
                state = checkpoint.read_state(request.start)
                checkpoint.fits(request.start, state, trainer.net, trainer.optimizer)
                step = int(state["step"])
            # everything is checked: from here on the run directory is written
            checkpoint.discard_after(path / "checkpoints", step)
            if request.changes:
                runs.write_text(path / "config.yaml", request.cfg.to_yaml())
            meta = request.meta
            resumes = [*meta.get("resumes", []), {
                "time": runs.now(), "from_step": step,
                "changes": [[k, a, b] for k, a, b in request.changes],
                "command": command or sys.argv,
            }]  # fmt: skip
            runs.write_json(
                path / "meta.json", {**meta, **trainer.meta(command), "resumes": resumes}
            )
            return trainer.train(path, reporter or SilentReporter(), start=request.start)
    finally:
        trainer.close()


def _check(
    path: Path, overrides: list[str] | tuple[str, ...], force: bool, from_step: int | None
) -> _Request:
    """Every check of a resume that needs no TensorFlow model: meta.json and config.yaml
    (through their schemas), the overrides, whether there is anything to resume, history.csv,
    and the checkpoint to start from, read whole. Writes nothing."""
    if pid := runlock.holder(path):  # a training process holds the run (its lock says so)
        raise runlock.refusal(path, pid)
    meta = runs.read_meta(path)
    runs.check_not_live(path, meta)  # runs of older versions, which took no lock
    saved = config.load(path / "config.yaml")
    cfg = config.load(path / "config.yaml", list(overrides))
    changes = config.diff(saved, cfg)
    breaking = [c for c in changes if config.is_breaking(c[0])]
    if breaking and not force:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in breaking)
        raise UserError(
            f"{path}: resuming with these changes would break the run: {listed}; "
            "pass --force to accept them"
        )
    finished = meta.get("status") == "finished" and not changes and from_step is None
    early = (meta.get("early_stopping") or {}).get("reason")
    if finished and early:
        raise UserError(
            f"{path}: the run {early}; nothing to resume (to train on: --resume with "
            "--set train.early_stopping.patience=N, or train.early_stopping=null)"
        )
    if finished:
        raise UserError(
            f"{path}: the run finished at step {meta.get('steps')}; nothing to resume "
            "(to train it longer: --resume with --steps or --epochs and --force)"
        )
    execution = _recorded_execution(path, meta)
    runs.history_rows(path)  # a damaged history.csv is refused now, not when it is trimmed
    if from_step is not None and from_step < 0:
        raise UserError(f"--from-checkpoint {from_step}: give a checkpoint's step, or 0")
    start = checkpoint.choose(path / "checkpoints", from_step)
    return _Request(meta, cfg, changes, start, execution)


def _recorded_execution(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The execution settings the run started with: meta.json's `execution`, or for runs from
    before `auto`, its plan's (so a resumed run keeps running the same program)."""
    recorded = meta.get("execution")
    if recorded is None and isinstance(meta.get("plan"), dict):
        plan = meta["plan"]
        recorded = {"choice": {
            "jit_compile": plan.get("jit_compile", False),
            "precision": plan.get("precision", "float32"),
            "steps_per_execution": plan.get("steps_per_execution", 1),
        }}  # fmt: skip
    if recorded is None:
        return None
    try:
        tune.Decision.from_dict(recorded, "resumed")
    except (TypeError, KeyError, ValueError, AttributeError):
        raise UserError(
            f"{path / 'meta.json'}: 'execution' is not a recorded choice of jit_compile, "
            "precision and steps_per_execution"
        ) from None
    return recorded
