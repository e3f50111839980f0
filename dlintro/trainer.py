"""The Trainer: one training process, built from a Config in small named steps, then the step
loop that logs, validates, checkpoints and stops, and the end of a run (model.keras,
metrics.json, meta.json's closing fields).

`train.run` and `train.resume` decide which run directory and checkpoint a Trainer gets;
scripts that time or inspect training (scripts/benchmark.py) build a Trainer themselves.
"""

from __future__ import annotations

import hashlib
import math
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlintro import checkpoint, data, distribute, evaluate, execution, models, optim, runs, tune
from dlintro.artifacts import save_keras, save_run_artifacts
from dlintro.config import Config
from dlintro.data.feed import Feed
from dlintro.early_stop import Watch
from dlintro.errors import DlintroError
from dlintro.events import RunStart
from dlintro.loop import DistributedStepRunner, StepRunner
from dlintro.onednn import current as onednn_switch
from dlintro.record import Recorder, Reporter
from dlintro.runmeta import describe as describe_run
from dlintro.stop import Interrupted, StopFlag


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
    watch: dict[str, Any] = field(default_factory=dict)  # meta.json's early_stopping and best
    steps_per_epoch: int = 1  # to say how many epochs `steps` are (progress.passes)


def plan_length(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, epochs to run) from `train.steps` or `train.epochs`."""
    if cfg.train.steps is not None:
        return cfg.train.steps, math.ceil(cfg.train.steps / steps_per_epoch)
    assert cfg.train.epochs is not None
    return cfg.train.epochs * steps_per_epoch, cfg.train.epochs


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes, in order: equal weights give equal fingerprints."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


class Trainer:
    """One training process for `cfg`: `build()` makes the strategy, data, model, optimizer and
    step runner; `train()` runs the loop into a run directory. Input problems raise UserError
    from `build()`, before anything is written."""

    def __init__(
        self,
        cfg: Config,
        data_dir: str | Path | None = None,
        started: float | None = None,
        execution: dict[str, Any] | None = None,
    ) -> None:
        """`execution`: a decision recorded in meta.json (a resumed run keeps its choices)."""
        self.cfg, self.data_dir, self.recorded = cfg, data_dir, execution
        self.started = started if started is not None else time.time()

    def build(self) -> Trainer:
        """Build everything, in this order: the strategy first (collective ops are configured
        at process start-up), data, the execution settings (measured where `auto`), then
        seeds and precision, and in the strategy's scope the model, the optimizer and the
        step runner. A strategy built already (train.resume: to know the chief) is kept."""
        if not hasattr(self, "strategy"):
            self.build_strategy()
        self.build_data()
        self.choose_execution()
        self.set_process_state()
        with self.strategy.scope():
            self.build_model()
            self.build_optimizer()
            self.build_runner()
        return self

    def build_strategy(self) -> None:
        """The strategy, this process's role, and what runs: the config with the global batch
        and the scaled learning rate (config.yaml keeps the user's values)."""
        user = self.cfg
        self.strategy = distribute.build(user.distribution)
        self.distributed = distribute.is_distributed(self.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.plan = distribute.plan(user, self.strategy)
        self.run_cfg = user.model_copy(
            update={
                "data": user.data.model_copy(update={"batch_size": self.plan.global_batch}),
                "optimizer": user.optimizer.model_copy(update={"learning_rate": self.plan.lr}),
            }
        )

    def set_process_state(self) -> None:
        """Seeds, op determinism and the precision policy (process-wide; close() resets it)."""
        cfg = self.run_cfg
        keras.utils.set_random_seed(cfg.seed)
        if cfg.train.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(cfg.train.precision)

    def build_data(self) -> None:
        """The data bundle (full global batches only under a strategy) and the run's length."""
        cfg = self.run_cfg
        self.bundle = data.build(cfg.data, cfg.seed, self.data_dir, full_batches=self.distributed)
        self.total_steps, self.epochs = plan_length(cfg, self.bundle.steps_per_epoch)

    def choose_execution(self) -> None:
        """XLA, precision and steps per call (execution.choose: explicit, recorded on resume,
        or measured); the run config gets the values, `decision` says why."""
        self.decision = execution.choose(
            self.run_cfg, self.bundle, self.total_steps, self.strategy, self.plan.workers,
            self.chief, self.recorded,
        )  # fmt: skip
        c, train = self.decision.choice, self.run_cfg.train
        update = {"jit_compile": c.jit_compile, "precision": c.precision,
                  "steps_per_execution": c.steps_per_execution}  # fmt: skip
        self.run_cfg = self.run_cfg.model_copy(update={"train": train.model_copy(update=update)})

    def measure_execution(self, everything: bool = True) -> tune.Decision:
        """The execution candidates of the config's `auto` keys measured on its model, batch
        and input path, all afresh or (not `everything`) as this run would (no training; the
        cache is updated): `dlintro tune`."""
        self.build_strategy()
        self.build_data()
        return execution.measure_only(self.run_cfg, self.bundle, self.total_steps, everything)

    def build_model(self) -> None:
        """net: what trains and what checkpoints hold (auxiliary outputs included); model: its
        main output, which is evaluated, saved and reported."""
        cfg, info = self.run_cfg, self.bundle.info
        self.net = models.build(
            cfg.model.name, info.input_shape, info.num_classes, cfg.model.params
        )  # then data-dependent initial weights (patch whitening): models.datainit
        models.initialize_from_data(self.net, self.bundle.prepare, self.bundle.num_train)
        self.model = models.main_output(self.net)

    def build_optimizer(self) -> None:
        """The optimizer with its schedule (loss scaling for float16)."""
        cfg = self.run_cfg
        optimizer = optim.build(
            cfg.optimizer, cfg.schedule, self.total_steps, self.bundle.steps_per_epoch
        )
        if cfg.train.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.schedule = optim.schedule_of(optimizer)

    def build_runner(self) -> None:
        """The compiled steps: one device, or every replica of the strategy."""
        cfg = self.run_cfg
        common = {
            "label_smoothing": cfg.train.label_smoothing,
            "l2": cfg.train.l2,
            "prepare": self.bundle.prepare,
            "ema": cfg.train.ema,  # the weights' moving average (dlintro.ema)
            "total_steps": self.total_steps,
        }
        jit = bool(cfg.train.jit_compile)
        if self.distributed:
            self.runner: StepRunner = DistributedStepRunner(
                self.net, self.optimizer, jit, self.strategy, self.plan.global_batch, **common
            )
        else:
            self.runner = StepRunner(self.net, self.optimizer, jit, **common)

    def close(self) -> None:
        keras.mixed_precision.set_global_policy("float32")

    def feed(self, step: int) -> Feed:
        """The training batches from global step `step` on (see DataBundle.feed)."""
        return self.bundle.feed(step, self.strategy if self.distributed else None)

    def meta(self, command: list[str] | None) -> dict[str, Any]:
        """meta.json's fields for this process (runmeta.describe)."""
        return describe_run(self, command)

    def train(self, path: Path | None, reporter: Reporter, start: Path | None) -> Result:
        """Run the loop from checkpoint `start` (or step 0) and finish the run in `path`.

        `path` None is a worker other than the chief of a multi-worker run: it trains in
        lockstep but writes nothing (its logs go to a temporary directory that is removed).
        """
        if path is None:
            with tempfile.TemporaryDirectory(prefix="dlintro-worker-") as tmp:
                return self._train(Path(tmp), reporter, start)
        return self._train(path, reporter, start)

    def restore(self, start: Path | None) -> dict[str, Any]:
        """Load checkpoint `start` (weights, optimizer, schedule, the epoch's running sums);
        return its state ({"step": 0, ...} without one)."""
        if start is None:
            return {"step": 0, "train_seconds": 0.0}
        state = checkpoint.restore(start, self.net, self.optimizer)
        if "schedule" in state and hasattr(self.schedule, "set_state"):
            self.schedule.set_state(state["schedule"])
        if "running_metrics" in state:  # the epoch's sums so far, when saved mid-epoch
            self.runner.set_metric_state(state["running_metrics"])
        return state

    def _train(self, path: Path, reporter: Reporter, start: Path | None) -> Result:
        cfg, b = self.run_cfg, self.bundle
        state = self.restore(start)
        self.watch = Watch(cfg, path, b.steps_per_epoch, self.chief, save_keras, state)
        step = int(state["step"])
        recorder = Recorder(
            cfg, b, self.total_steps, self.epochs, path, reporter, step,
            model=self.model, loss_fn=self.runner.data_loss,
        )  # fmt: skip
        recorder.train_seconds = float(state.get("train_seconds", 0.0))
        reporter.start(
            RunStart(
                run_dir=str(path), model=cfg.model.name,
                params=int(self.model.count_params()), dataset=b.info.name,
                num_train=b.num_train, total_steps=self.total_steps, epochs=self.epochs,
                batch_size=cfg.data.batch_size, start_step=step,
                label_smoothing=cfg.train.label_smoothing,
                distribution=self.plan.line() if self.distributed else "",
                execution="\n".join([self.decision.line(), *onednn_switch().shown()]),
                data_note=b.info.skipped_note(),
            )
        )  # fmt: skip
        try:
            with StopFlag() as stop:
                self._loop(path, recorder, stop, step)
            reporter.end()
            metrics = self._finish(path, recorder)
        except BaseException as exc:
            reporter.end()
            status = "interrupted" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
            status = getattr(exc, "run_status", status)  # a reporter's stop (sweep: "pruned")
            if self.chief:
                runs.update_meta(path, status=status, ended=runs.now(), error=str(exc)[:500])
            raise
        finally:
            recorder.close()
        return self._result(path, recorder, metrics, step)

    def _finish(self, path: Path, recorder: Recorder) -> dict[str, Any]:
        """The chief saves model.keras and evaluates it on the test set (metrics.json); every
        worker then waits for it, so that none leaves while it works."""
        metrics: dict[str, Any] = {}
        self.runner.finish()  # the final weights (train.ema's average) on every worker
        if self.chief:
            save_keras(self.model, path / "model.keras")
            save_run_artifacts(path, self.model, self.bundle, self.run_cfg, self.data_dir)
            probs, labels = evaluate.predict(self.model, self.bundle.test, tta=self.cfg.eval.tta)
            metrics = evaluate.metrics(probs, labels, list(self.bundle.info.class_names))
            runs.write_json(path / "metrics.json", metrics)
            recorder.log_test(metrics, probs, labels)
            self.watch.test_best(self.model, self.bundle.test, metrics["class_names"])
        if self.plan.workers > 1:
            self.runner.any_worker(False)
        return metrics

    def _result(
        self, path: Path, recorder: Recorder, metrics: dict[str, Any], start_step: int
    ) -> Result:
        """The Result, and meta.json's closing fields (chief only)."""
        wall = time.time() - self.started
        ips = recorder.images_seen / max(recorder.session_seconds, 1e-9)
        epochs_done = math.ceil(recorder.step / self.bundle.steps_per_epoch)
        fingerprint = weights_fingerprint(self.net)
        if not self.chief:
            return Result(
                path,
                metrics,
                recorder.step,
                epochs_done,
                wall,
                0.0,
                ips,
                start_step,
                fingerprint,
                steps_per_epoch=self.bundle.steps_per_epoch,
            )
        runs.update_meta(
            path, status="finished", ended=runs.now(), wall_seconds=round(wall, 2),
            train_seconds=round(recorder.train_seconds, 2), images_per_second=round(ips, 1),
            steady_images_per_second=round(
                recorder.steady_images / max(recorder.steady_seconds, 1e-9), 1
            ),
            steps=recorder.step, epochs=epochs_done,
            test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
            weights_sha256=fingerprint, **self.watch.meta(),
        )  # fmt: skip
        return Result(
            path, metrics, recorder.step, epochs_done, wall, recorder.train_seconds, ips,
            start_step, fingerprint, self.watch.meta(), self.bundle.steps_per_epoch,
        )  # fmt: skip

    def _loop(self, path: Path, recorder: Recorder, stop: StopFlag, step: int) -> None:
        cfg, spe, runner = self.run_cfg, self.bundle.steps_per_epoch, self.runner
        feed = self.feed(step)
        policy = checkpoint.Policy(cfg.checkpoint, step, self.total_steps)
        if step % spe:  # resumed mid-epoch: the running sums were restored; time restarts
            recorder.epoch_start()
        early = False  # stopped early (dlintro.early_stop): finish the run at this step
        while step < self.total_steps and not early:
            if step % spe == 0:
                runner.reset_metrics()
                recorder.epoch_start()
            n = min(cfg.train.steps_per_execution, self.total_steps - step, spe - step % spe)
            n = feed.chunk(step, n)
            t0 = time.perf_counter()
            done = feed.run(runner, step, n)
            recorder.add_time(time.perf_counter() - t0, step, step + done)
            if done < n:
                raise self._non_finite(path, step + done)
            step += done
            recorder.step_end(step, runner.metrics(), self.optimizer)
            epoch_end = step % spe == 0 or step == self.total_steps
            early = epoch_end and self._epoch_end(recorder, step)
            stopping = bool(stop.signum)
            if self.plan.workers > 1 and runner.any_worker(stopping):
                stop.signum = stop.signum or signal.SIGTERM  # all stop together, at this step
                stopping = True
            if self.chief and policy.due(step, epoch_end, stopping or early):
                self._save(path, recorder, step)
                policy.saved(step)
            if stop.signum:
                name = signal.Signals(stop.signum).name
                raise Interrupted(
                    f"{name}: stopped at step {step}; checkpoint saved. Resume with: "
                    f"dlintro train --resume {path}",
                    stop.signum,
                )

    def _epoch_end(self, recorder: Recorder, step: int) -> bool:
        """Validate, record the epoch, let a metric-driven schedule and the watch see it;
        True when the run stops early here."""
        runner = self.runner
        with runner.evaluated():  # the best model kept is the one measured (train.ema's average)
            val = runner.evaluate(self.bundle.validation) if self.bundle.validation else None
            stop = self.watch.epoch_end(step, val, self.model)
        recorder.epoch_end(step, runner.metrics(), val, self.optimizer)
        if hasattr(self.schedule, "on_epoch_end"):  # e.g. reduce_on_plateau
            val_logs = {f"val_{k}": v for k, v in (val or {}).items()}
            self.schedule.on_epoch_end(runner.metrics() | val_logs)
        return stop

    def _save(self, path: Path, recorder: Recorder, step: int) -> None:
        """A checkpoint of everything an exact continuation from `step` needs."""
        state = {
            "step": step,
            "epoch": step // self.bundle.steps_per_epoch,
            "train_seconds": recorder.train_seconds,
            "running_metrics": self.runner.metric_state(),
            "watch": self.watch.state(),
        }
        if hasattr(self.schedule, "get_state"):
            state["schedule"] = self.schedule.get_state()
        checkpoint.save(
            path / "checkpoints", self.net, self.optimizer, state, self.cfg.checkpoint.keep
        )

    def _non_finite(self, path: Path, step: int) -> NonFiniteLoss:
        """The error for a loss that stopped being finite at global step `step` + 1."""
        bad = float(self.runner.bad_loss.numpy())
        lr = optim.learning_rate_at(self.optimizer, step)
        kept = checkpoint.latest(path / "checkpoints")
        return NonFiniteLoss(
            f"the loss became {bad} at step {step + 1} (learning rate {lr:.3g}); "
            f"training stopped; last good checkpoint: "
            f"{kept.name if kept else 'none'}. Try a lower optimizer.learning_rate"
        )
