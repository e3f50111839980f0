"""Training runs, the public API: `run` trains a Config into a new run directory, `resume`
continues one from its newest checkpoint. Both write config.yaml and meta.json, then hand over
to a Trainer (dlintro.trainer), which leaves history.csv, logs/, checkpoints/, model.keras and
metrics.json.

Printing belongs to the CLI: progress goes to a `Reporter` that the caller supplies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dlintro import checkpoint, config, runs, tune
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
    run directory is created, so a bad invocation leaves nothing behind. `started` (a time.time()
    value) is when the user's command began, so that wall time includes start-up.
    """
    trainer = Trainer(cfg, data_dir, started)
    try:
        trainer.build()
        if not trainer.chief:  # other workers of a multi-worker run write nothing
            return trainer.train(None, SilentReporter(), start=None)
        path = runs.create(cfg.name, run_dir)
        runs.write_text(path / "config.yaml", cfg.to_yaml())
        runs.write_json(path / "meta.json", trainer.meta(command))
        return trainer.train(path, reporter or SilentReporter(), start=None)
    finally:
        trainer.close()


def resume(
    run_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    data_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    command: list[str] | None = None,
    started: float | None = None,
) -> Result:
    """Continue a run from its newest checkpoint (from the start if it has none).

    Overrides that would break the run (a different model, data order, batch, length or
    schedule) are refused with the list of differences unless `force` is set.
    """
    path = runs.open_run(run_dir)
    meta = runs.read_meta(path)
    runs.check_not_live(path, meta)
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
    if meta.get("status") == "finished" and not changes:
        raise UserError(
            f"{path}: the run finished at step {meta.get('steps')}; nothing to resume "
            "(to train it longer: --resume with --steps or --epochs and --force)"
        )
    trainer = Trainer(cfg, data_dir, started, execution=_recorded_execution(path, meta))
    try:
        trainer.build()
        latest = checkpoint.latest(path / "checkpoints")
        if not trainer.chief:
            return trainer.train(None, SilentReporter(), start=latest)
        if changes:
            runs.write_text(path / "config.yaml", cfg.to_yaml())
        resumes = [*meta.get("resumes", []), {
            "time": runs.now(), "from_step": checkpoint.read_state(latest)["step"] if latest else 0,
            "changes": [[k, a, b] for k, a, b in changes], "command": command or sys.argv,
        }]  # fmt: skip
        runs.write_json(path / "meta.json", {**meta, **trainer.meta(command), "resumes": resumes})
        return trainer.train(path, reporter or SilentReporter(), start=latest)
    finally:
        trainer.close()


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
