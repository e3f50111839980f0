"""The training run: data, model and optimizer from a Config, the step loop, checkpoints and
resume, and everything a run leaves behind (config.yaml, meta.json, history.csv, logs/,
checkpoints/, model.keras, metrics.json).

Printing belongs to the CLI: progress goes to a `Reporter` that the caller supplies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlintro import checkpoint, config, data, distribute, evaluate, models, optim, runs
from dlintro.config import Config
from dlintro.data import pipeline
from dlintro.errors import DlintroError, UserError
from dlintro.loop import DistributedStepRunner, Feed, StepRunner
from dlintro.record import Recorder, Reporter, SilentReporter


class Interrupted(DlintroError):
    """SIGINT or SIGTERM: a checkpoint was saved; exit 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFiniteLoss(DlintroError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Result:
    """What a finished run reports."""

    run_dir: Path
    metrics: dict[str, Any]
    steps: int
    epochs: int
    wall_seconds: float  # this process, from the command's start
    train_seconds: float  # in the step loop, over every session of the run
    images_per_second: float  # this process
    start_step: int = 0  # where this process began (> 0 after a resume)
    fingerprint: str = ""  # of the final weights: equal on every worker of a lockstep run


def plan_length(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, epochs to run) from `train.steps` or `train.epochs`."""
    if cfg.train.steps is not None:
        return cfg.train.steps, math.ceil(cfg.train.steps / steps_per_epoch)
    assert cfg.train.epochs is not None
    return cfg.train.epochs * steps_per_epoch, cfg.train.epochs


def _jit(setting: str | bool) -> bool:
    """'auto' uses XLA only on accelerators, as Keras does (XLA is rarely faster on CPU)."""
    if setting == "auto":
        return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())
    return bool(setting)


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
    session = _Session(cfg, data_dir, started)
    try:
        session.build()
        if not session.chief:  # other workers of a multi-worker run write nothing
            return session.train(None, SilentReporter(), start=None)
        path = runs.create(cfg.name, run_dir)
        runs.write_text(path / "config.yaml", cfg.to_yaml())
        runs.write_json(path / "meta.json", session.meta(command))
        return session.train(path, reporter or SilentReporter(), start=None)
    finally:
        session.close()


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
    _check_not_live(path, meta)
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
    session = _Session(cfg, data_dir, started)
    try:
        session.build()
        latest = checkpoint.latest(path / "checkpoints")
        if not session.chief:
            return session.train(None, SilentReporter(), start=latest)
        if changes:
            runs.write_text(path / "config.yaml", cfg.to_yaml())
        resumes = [*meta.get("resumes", []), {
            "time": runs.now(), "from_step": checkpoint.read_state(latest)["step"] if latest else 0,
            "changes": [[k, a, b] for k, a, b in changes], "command": command or sys.argv,
        }]  # fmt: skip
        runs.write_json(path / "meta.json", {**meta, **session.meta(command), "resumes": resumes})
        return session.train(path, reporter or SilentReporter(), start=latest)
    finally:
        session.close()


def _check_not_live(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a run that another live process on this machine is still writing."""
    pid, host = meta.get("pid"), meta.get("host")
    if meta.get("status") != "running" or not isinstance(pid, int) or pid == os.getpid():
        return
    if host not in (None, socket.gethostname()):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass
    raise UserError(f"{path}: the run is still being written by process {pid}; wait or stop it")


class _Session:
    """One training process: builds data, model and optimizer, then runs the step loop."""

    def __init__(self, cfg: Config, data_dir: str | Path | None, started: float | None) -> None:
        self.cfg, self.data_dir = cfg, data_dir
        self.started = started if started is not None else time.time()

    def build(self) -> None:
        user = self.cfg
        # The strategy comes first: collective ops are configured at process start-up.
        self.strategy = distribute.build(user.distribution)
        self.distributed = distribute.is_distributed(self.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.plan = distribute.plan(user, self.strategy)
        # What runs: the global batch and the scaled rate (config.yaml keeps the user's values).
        cfg = self.run_cfg = user.model_copy(
            update={
                "data": user.data.model_copy(update={"batch_size": self.plan.global_batch}),
                "optimizer": user.optimizer.model_copy(update={"learning_rate": self.plan.lr}),
            }
        )
        keras.utils.set_random_seed(cfg.seed)
        if cfg.train.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(cfg.train.precision)
        self.bundle = data.build(cfg.data, cfg.seed, self.data_dir)
        if self.distributed:  # full global batches only, so that they split evenly
            spe = self.bundle.num_train // self.plan.global_batch
            if spe < 1:
                raise UserError(
                    f"{self.bundle.num_train} training images are fewer than one global batch "
                    f"of {self.plan.global_batch}"
                )
            self.bundle = dataclasses.replace(
                self.bundle, steps_per_epoch=spe, num_train=spe * self.plan.global_batch
            )
        self.total_steps, self.epochs = plan_length(cfg, self.bundle.steps_per_epoch)
        strategy = self.strategy
        with strategy.scope():
            info = self.bundle.info
            # net: what trains and what checkpoints hold (auxiliary outputs included);
            # model: its main output, which is evaluated, saved and reported.
            self.net = models.build(
                cfg.model.name, info.input_shape, info.num_classes, cfg.model.params
            )
            self.model = models.main_output(self.net)
            try:
                optimizer = optim.build(
                    cfg.optimizer, cfg.schedule, self.total_steps, self.bundle.steps_per_epoch
                )
            except ValueError as exc:
                raise UserError(f"optimizer/schedule: {exc}") from None
            if cfg.train.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.schedule = optim.schedule_of(optimizer)
            monitor = getattr(self.schedule, "monitor", "")
            if monitor.startswith("val_") and self.bundle.validation is None:
                raise UserError(
                    f"schedule {cfg.schedule.name} monitors {monitor}, but there is no "
                    "validation set: set data.validation_split > 0 or schedule.params.monitor: loss"
                )
            jit, smoothing, l2 = (
                _jit(cfg.train.jit_compile),
                cfg.train.label_smoothing,
                cfg.train.l2,
            )
            if self.distributed:
                self.runner: StepRunner = DistributedStepRunner(
                    self.net, optimizer, jit, strategy, self.plan.global_batch,
                    label_smoothing=smoothing, l2=l2, prepare=self.bundle.prepare,
                )  # fmt: skip
            else:
                self.runner = StepRunner(
                    self.net, optimizer, jit, label_smoothing=smoothing, l2=l2,
                    prepare=self.bundle.prepare,
                )  # fmt: skip

    def close(self) -> None:
        keras.mixed_precision.set_global_policy("float32")

    def feed(self, step: int) -> Feed:
        """The training steps from global step `step` on (see Feed)."""
        spe = self.bundle.steps_per_epoch
        if not self.distributed and self.bundle.train_rows is not None:
            return Feed(self.runner, spe, rows=self.bundle.train_rows)
        return Feed(self.runner, spe, iterator=iter(self.stream(step)))

    def stream(self, step: int) -> Any:
        """The training batches from global step `step` on. One device gets index batches
        (the step gathers the images from memory); replicas get their slices of the images."""
        if self.distributed:
            return pipeline.distribute_stream(
                self.strategy, self.bundle.train_stream, step, self.plan.global_batch
            )
        return self.bundle.train_stream(step, indices=True)

    def meta(self, command: list[str] | None) -> dict[str, Any]:
        b, cfg = self.bundle, self.cfg
        return {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "name": cfg.name,
            "command": command if command is not None else sys.argv,
            "started": runs.now(),
            "seed": cfg.seed,
            "versions": runs.versions(),
            "machine": runs.machine(),
            "data": {
                "dataset": b.info.name,
                "num_train": b.num_train,
                "num_validation": b.num_validation,
                "num_test": b.num_test,
                "input_shape": list(b.info.input_shape),
                "class_names": list(b.info.class_names),
                "normalization": b.normalization,
            },
            "plan": {
                "total_steps": self.total_steps,
                "epochs": self.epochs,
                "steps_per_epoch": b.steps_per_epoch,
                "batch_size": cfg.data.batch_size,
                "steps_per_execution": cfg.train.steps_per_execution,
                "jit_compile": _jit(cfg.train.jit_compile),
            },
            "model": {"name": cfg.model.name, "params": int(self.net.count_params())},
            "distribution": {
                "strategy": type(self.strategy).__name__,
                "devices": list(self.strategy.extended.worker_devices)
                if self.distributed
                else [d.name for d in tf.config.list_logical_devices()[:1]],
                **self.plan.to_dict(),
            },
        }

    def train(self, path: Path | None, reporter: Reporter, start: Path | None) -> Result:
        """Run the loop from checkpoint `start` (or step 0) and finish the run in `path`.

        `path` None is a worker other than the chief of a multi-worker run: it trains in
        lockstep but writes nothing (its logs go to a temporary directory that is removed).
        """
        if path is None:
            with tempfile.TemporaryDirectory(prefix="dlintro-worker-") as tmp:
                return self._train(Path(tmp), reporter, start)
        return self._train(path, reporter, start)

    def _train(self, path: Path, reporter: Reporter, start: Path | None) -> Result:
        cfg, b = self.run_cfg, self.bundle
        state = {"step": 0, "train_seconds": 0.0}
        if start is not None:
            state = checkpoint.restore(start, self.net, self.optimizer)
            if "schedule" in state and hasattr(self.schedule, "set_state"):
                self.schedule.set_state(state["schedule"])
            if "running_metrics" in state:  # the epoch's sums so far, when saved mid-epoch
                self.runner.set_metric_state(state["running_metrics"])
        step = int(state["step"])
        recorder = Recorder(
            cfg, b, self.total_steps, self.epochs, path, reporter, step,
            model=self.model, loss_fn=self.runner.data_loss,
        )  # fmt: skip
        recorder.train_seconds = float(state.get("train_seconds", 0.0))
        reporter.start({
            "run_dir": str(path), "model": cfg.model.name,
            "params": int(self.model.count_params()), "dataset": b.info.name,
            "num_train": b.num_train, "total_steps": self.total_steps, "epochs": self.epochs,
            "batch_size": cfg.data.batch_size, "start_step": step,
            "label_smoothing": cfg.train.label_smoothing,
            "distribution": self.plan.line() if self.distributed else "",
        })  # fmt: skip
        stop = _SignalFlag()
        try:
            with stop:
                self._loop(path, recorder, stop, step)
            reporter.end()
            metrics: dict[str, Any] = {}
            if self.chief:
                _save_model(self.model, path / "model.keras")
                probs, labels = evaluate.predict(self.model, b.test)
                metrics = evaluate.metrics(probs, labels, list(b.info.class_names))
                runs.write_json(path / "metrics.json", metrics)
                recorder.log_test(metrics, probs, labels)
            if self.plan.workers > 1:  # wait for the chief, so no worker leaves while it works
                self.runner.any_worker(False)  # type: ignore[attr-defined]
        except BaseException as exc:
            reporter.end()
            status = "interrupted" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
            if self.chief:
                runs.update_meta(path, status=status, ended=runs.now(), error=str(exc)[:500])
            raise
        finally:
            recorder.close()
        wall = time.time() - self.started
        ips = recorder.images_seen / max(recorder.session_seconds, 1e-9)
        epochs_done = math.ceil(recorder.step / b.steps_per_epoch)
        fingerprint = weights_fingerprint(self.net)
        if not self.chief:
            return Result(
                path, metrics, recorder.step, epochs_done, wall, 0.0, ips, step, fingerprint
            )
        runs.update_meta(
            path, status="finished", ended=runs.now(), wall_seconds=round(wall, 2),
            train_seconds=round(recorder.train_seconds, 2), images_per_second=round(ips, 1),
            steady_images_per_second=round(
                recorder.steady_images / max(recorder.steady_seconds, 1e-9), 1
            ),
            steps=recorder.step, epochs=math.ceil(recorder.step / b.steps_per_epoch),
            test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
            weights_sha256=fingerprint,
        )  # fmt: skip
        return Result(
            path, metrics, recorder.step, epochs_done, wall, recorder.train_seconds, ips, step,
            fingerprint,
        )  # fmt: skip

    def _loop(self, path: Path, recorder: Recorder, stop: _SignalFlag, step: int) -> None:
        cfg, spe, runner = self.run_cfg, self.bundle.steps_per_epoch, self.runner
        ckpt = cfg.checkpoint
        feed = self.feed(step)
        last_save_step, last_save_time = step, time.monotonic()
        if step % spe:  # resumed mid-epoch: the running sums were restored; time restarts
            recorder.epoch_start()
        while step < self.total_steps:
            if step % spe == 0:
                runner.reset_metrics()
                recorder.epoch_start()
            n = min(cfg.train.steps_per_execution, self.total_steps - step, spe - step % spe)
            n = feed.chunk(step, n)
            t0 = time.perf_counter()
            done = feed.run(step, n)
            recorder.add_time(time.perf_counter() - t0, step, step + done)
            if done < n:
                bad = float(runner.bad_loss.numpy())
                lr = optim.learning_rate_at(self.optimizer, step + done)
                kept = checkpoint.latest(path / "checkpoints")
                raise NonFiniteLoss(
                    f"the loss became {bad} at step {step + done + 1} (learning rate {lr:.3g}); "
                    f"training stopped; last good checkpoint: "
                    f"{kept.name if kept else 'none'}. Try a lower optimizer.learning_rate"
                )
            step += done
            recorder.step_end(step, runner.metrics(), self.optimizer)
            epoch_end = step % spe == 0 or step == self.total_steps
            if epoch_end:
                val = runner.evaluate(self.bundle.validation) if self.bundle.validation else None
                recorder.epoch_end(step, runner.metrics(), val, self.optimizer)
                if hasattr(self.schedule, "on_epoch_end"):  # e.g. reduce_on_plateau
                    val_logs = {f"val_{k}": v for k, v in (val or {}).items()}
                    self.schedule.on_epoch_end(runner.metrics() | val_logs)
            due = (
                (epoch_end and ckpt.at_epoch_end)
                or step == self.total_steps
                or (ckpt.every_steps and step - last_save_step >= ckpt.every_steps)
                or (
                    ckpt.every_minutes
                    and time.monotonic() - last_save_time >= 60 * ckpt.every_minutes
                )
                or stop.signum
            )
            if self.plan.workers > 1 and self.runner.any_worker(bool(stop.signum)):  # type: ignore[attr-defined]
                stop.signum = stop.signum or signal.SIGTERM  # all stop together, at this step
                due = True
            if due and step > last_save_step and self.chief:
                state = {
                    "step": step,
                    "epoch": step // spe,
                    "train_seconds": recorder.train_seconds,
                    "running_metrics": runner.metric_state(),
                }
                if hasattr(self.schedule, "get_state"):
                    state["schedule"] = self.schedule.get_state()
                checkpoint.save(path / "checkpoints", self.net, self.optimizer, state, ckpt.keep)
                last_save_step, last_save_time = step, time.monotonic()
            if stop.signum:
                name = signal.Signals(stop.signum).name
                raise Interrupted(
                    f"{name}: stopped at step {step}; checkpoint saved. Resume with: "
                    f"dlintro train --resume {path}",
                    stop.signum,
                )


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes, in order: equal weights give equal fingerprints."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


class _SignalFlag:
    """While active, SIGINT and SIGTERM only set a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _SignalFlag:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _save_model(model: keras.Model, path: Path) -> None:
    """Save atomically: Keras writes a temporary file that is then renamed into place."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
