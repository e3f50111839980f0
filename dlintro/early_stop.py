"""Early stopping and the best model by a validation metric (`train.early_stopping`,
`checkpoint.keep_best`): what Keras' EarlyStopping and ModelCheckpoint(save_best_only=True),
Lightning's EarlyStopping and ModelCheckpoint(monitor=...) and timm's model_best do.

Validation runs at every epoch end (and at the last step); each validation is one evaluation.
The direction follows the metric: higher is better for an accuracy, lower for a loss.

- Early stopping: an evaluation improves when it beats the best so far by more than
  `min_delta` (the first one always does); after `patience` evaluations in a row without an
  improvement the run stops. The step loop then saves a checkpoint and finishes the run as usual:
  model.keras is the last model and metrics.json its test metrics (Keras' default,
  restore_best_weights=False), so that metrics.json always describes model.keras.
- keep_best: model_best.keras is written at every strict improvement of its monitor (a tie keeps
  the earlier model); at the end its test metrics go to metrics_best.json and meta.json's `best`
  (Lightning's `test(ckpt_path="best")` number), beside the last model's. It holds the weights
  that validation measured: the trainer calls `epoch_end` inside the runner's `evaluated()`,
  so with train.ema it is the average, not that step's training weights.

The state of both (best value, its step, evaluations since) is in every checkpoint, so a run
interrupted and resumed stops at the step where an uninterrupted one stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlintro import runs
from dlintro.config import Config, best_monitor
from dlintro.errors import DlintroError

BEST_MODEL = "model_best.keras"
BEST_METRICS = "metrics_best.json"


def mode_of(metric: str) -> str:
    """'max' for an accuracy, 'min' for a loss (the direction in which the metric improves)."""
    return "max" if metric.endswith("accuracy") else "min"


@dataclass
class Tracker:
    """The best value of one metric so far, where it was, and evaluations since."""

    monitor: str
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    wait: int = 0

    def update(self, value: float, step: int) -> bool:
        """Note one evaluation at global step `step`; True when it improves on the best by
        more than min_delta (NaN never improves)."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif mode_of(self.monitor) == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_step, self.wait = value, step, 0
        else:
            self.wait += 1
        return improved

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (JSON keeps the float exactly)."""
        return {"monitor": self.monitor, "best": self.best, "best_step": self.best_step,
                "wait": self.wait}  # fmt: skip

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's state; one of another metric starts afresh."""
        if not state or state.get("monitor") != self.monitor:
            return
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.best_step = None if state.get("best_step") is None else int(state["best_step"])
        self.wait = int(state.get("wait", 0))


class Watch:
    """The run's early stopping and best model: told every validation (`epoch_end`), it says
    when to stop, writes model_best.keras (when `write`: the chief) through `save`, the
    trainer's way of saving the run's model, and reports for meta.json and the checkpoint.
    `state` is the state of the checkpoint the run continues from (its `watch` entry)."""

    def __init__(
        self,
        cfg: Config,
        path: Path,
        steps_per_epoch: int,
        write: bool,
        save: Callable[[Any, Path], None],
        state: dict[str, Any] | None = None,
    ) -> None:
        es, ck = cfg.train.early_stopping, cfg.checkpoint
        self.stopping = Tracker(es.monitor, es.min_delta) if es is not None else None
        self.patience = es.patience if es is not None else 0
        self.keeping = Tracker(best_monitor(cfg)) if ck.keep_best else None
        self.path, self.steps_per_epoch, self.write, self.save = path, steps_per_epoch, write, save
        self.best_weights: list[np.ndarray] | None = None  # this session's best, in memory
        self.best_test: dict[str, Any] = {}  # the best model's test metrics, at the end
        self.reason: str | None = None
        self.stopped_step: int | None = None
        self.set_state((state or {}).get("watch"))

    @property
    def active(self) -> bool:
        return self.stopping is not None or self.keeping is not None

    def epoch_end(self, step: int, val: dict[str, float] | None, model: Any) -> bool:
        """Note the validation at global step `step` (`val`: loss, accuracy); True when the
        run is to stop here."""
        if not self.active or val is None:
            return False
        logs = {f"val_{k}": float(v) for k, v in val.items()}
        if self.keeping is not None and self.keeping.update(_value(logs, self.keeping), step):
            self.best_weights = [np.array(w, copy=True) for w in model.get_weights()]
            if self.write:
                self.save(model, self.path / BEST_MODEL)
        t = self.stopping
        if t is not None and t.update(_value(logs, t), step) is False and t.wait >= self.patience:
            by = f" by more than {t.min_delta:g}" if t.min_delta else ""
            best = "none" if t.best is None else f"{t.best:.6g} at step {t.best_step:,}"
            self.stopped_step = step
            self.reason = (
                f"stopped early at step {step:,}: {t.monitor} did not improve{by} for "
                f"{_evaluations(t.wait)} (best {best})"
            )
        return self.reason is not None

    def state(self) -> dict[str, Any]:
        """The checkpoint's `watch` entry."""
        return {
            "early_stopping": self.stopping.state() if self.stopping else None,
            "best": self.keeping.state() if self.keeping else None,
        }

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's `watch` entry (absent in older checkpoints)."""
        state = state or {}
        if self.stopping is not None:
            self.stopping.set_state(state.get("early_stopping"))
        if self.keeping is not None:
            self.keeping.set_state(state.get("best"))

    def test_best(self, model: Any, test: Any, class_names: list[str]) -> dict[str, Any] | None:
        """Test metrics of the best model (written to metrics_best.json by the chief), or None
        without keep_best. `model` gets the best weights for this and its own back after."""
        from dlintro import evaluate

        if self.keeping is None or self.keeping.best_step is None:
            return None
        last = model.get_weights()
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        else:  # the best came from an earlier session of a resumed run
            model.load_weights(self.path / BEST_MODEL)
        try:
            probs, labels = evaluate.predict(model, test)
        finally:
            model.set_weights(last)
        metrics = evaluate.metrics(probs, labels, class_names)
        if self.write:
            runs.write_json(self.path / BEST_METRICS, metrics)
        self.best_test = metrics
        return metrics

    def meta(self) -> dict[str, Any]:
        """meta.json's `early_stopping` and `best` (None when not configured)."""
        out: dict[str, Any] = {"early_stopping": None, "best": None}
        if (t := self.stopping) is not None:
            out["early_stopping"] = {
                "monitor": t.monitor, "mode": mode_of(t.monitor), "patience": self.patience,
                "min_delta": t.min_delta, "best": t.best, "best_step": t.best_step,
                "stopped_step": self.stopped_step, "reason": self.reason,
            }  # fmt: skip
        if (k := self.keeping) is not None and k.best_step is not None:
            test = self.best_test
            out["best"] = {
                "path": BEST_MODEL, "monitor": k.monitor, "mode": mode_of(k.monitor),
                "value": k.best, "step": k.best_step,
                "epoch": (k.best_step - 1) // self.steps_per_epoch + 1,
                "test_accuracy": test.get("accuracy"), "test_loss": test.get("loss"),
            }  # fmt: skip
        return out


def _value(logs: dict[str, float], tracker: Tracker) -> float:
    if tracker.monitor not in logs:
        raise DlintroError(
            f"{tracker.monitor} is monitored, but validation computes only "
            f"{', '.join(sorted(logs))}"
        )
    return logs[tracker.monitor]


def _evaluations(n: int) -> str:
    return f"{n} evaluation" + ("" if n == 1 else "s")
