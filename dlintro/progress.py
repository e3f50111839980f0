"""Training progress for people: a live line on a terminal, plain lines elsewhere.

The reporters take the events of dlintro.events (what dlintro.record.Recorder sends). The live
line is laid out for the terminal's width at every refresh: the step count always shows; the
other fields (loss, time left, accuracy, images per second, epoch, a bar, learning rate) are
dropped one by one, least useful first, as the width shrinks, so the line never wraps or is cut.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task
from rich.text import Text

from dlintro.events import EpochEnd, RunStart, StepProgress

SEPARATOR = "  "
BAR_MIN, BAR_MAX = 10, 40
# The order in which fields are kept as the width shrinks: the step count always, then these.
PRIORITY = ("loss", "left", "accuracy", "speed", "epoch", "bar", "learning_rate")
# Their order on the line, left to right.
ORDER = ("epoch", "bar", "steps", "left", "loss", "accuracy", "learning_rate", "speed")


def _loss_name(plan: RunStart) -> str:
    """With label smoothing the training loss stays well above 0 however good the model is
    (0.5 at 99% accuracy for 0.1): the lines say so, next to a plain-cross-entropy test loss."""
    return "smoothed loss" if plan.label_smoothing else "loss"


def _stats(logs: StepProgress, loss: str = "loss") -> str:
    return (
        f"{loss} {logs.loss:.4f}  acc {logs.accuracy:.2%}  lr {logs.learning_rate:.2e}  "
        f"{logs.images_per_second:,.0f} img/s"
    )


def _epoch_line(logs: EpochEnd, loss: str = "loss") -> str:
    val = ""
    if logs.val_accuracy == logs.val_accuracy:  # not NaN: a validation split exists
        val = f"  val_loss {logs.val_loss:.4f}  val_acc {logs.val_accuracy:.2%}"
    return (
        f"epoch {logs.epoch}/{logs.epochs}  step {logs.step:,}  "
        f"{loss} {logs.loss:.4f}  acc {logs.accuracy:.2%}{val}  {logs.seconds:.1f} s  "
        f"{logs.images_per_second:,.0f} img/s"
    )


def epochs_phrase(total_steps: int, num_train: int, batch_size: int) -> str:
    """How many passes over the training set `total_steps` make: '17 epochs', '1 epoch',
    '0.64 epochs', '16.67 epochs' (the true fraction, never rounded up to a whole epoch)."""
    return passes(total_steps, max(1, math.ceil(num_train / max(batch_size, 1))))


def passes(total_steps: int, steps_per_epoch: int) -> str:
    """epochs_phrase for a known number of steps per epoch."""
    steps_per_epoch = max(1, steps_per_epoch)
    epochs = total_steps / steps_per_epoch
    if total_steps % steps_per_epoch == 0:
        whole = total_steps // steps_per_epoch
        return f"{whole:,} epoch{'' if whole == 1 else 's'}"
    shown = f"{epochs:,.2f}" if epochs >= 0.1 else f"{epochs:.2g}"
    return f"{shown} epochs"


def _start_line(plan: RunStart) -> str:
    extra = [line for line in (plan.data_note, plan.distribution, plan.execution) if line]
    return "\n".join([_plain_start(plan), *extra])


def _plain_start(plan: RunStart) -> str:
    length = epochs_phrase(plan.total_steps, plan.num_train, plan.batch_size)
    return (
        f"training {plan.model} ({plan.params:,} parameters) on {plan.dataset} "
        f"({plan.num_train:,} images): {plan.total_steps:,} steps = "
        f"{length} of batch {plan.batch_size}; writing {plan.run_dir}"
    )


def clock(seconds: float | None) -> str:
    """Seconds as '0:42', '12:03' or '2:05:09'; '-:--' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


@dataclass
class LiveState:
    """What the live line shows: the latest progress event and the time left.

    The time left comes from the speed since the first progress event of this session (the
    first chunk, which traces and compiles, is left out once a second event has come), counted
    down between events."""

    step: int
    total_steps: int
    epoch: int = 1
    epochs: int = 1
    loss_name: str = "loss"
    logs: StepProgress | None = None
    seconds_left: float | None = None
    since: tuple[float, int] | None = None  # (time, step) the speed is measured from
    last: tuple[float, float] | None = None  # (time of the last event, seconds left then)

    def advance(self, logs: StepProgress, now: float) -> None:
        """Take a progress event that arrived at `now` (time.monotonic seconds)."""
        if self.since is None or self.since[1] >= logs.step:
            self.since = (now, logs.step)
        t0, s0 = self.since
        if logs.step > s0 and now > t0:
            left = (logs.total_steps - logs.step) * (now - t0) / (logs.step - s0)
            self.last = (now, left)
        self.step, self.total_steps = logs.step, logs.total_steps
        self.epoch, self.epochs, self.logs = logs.epoch, logs.epochs, logs

    def left_at(self, now: float) -> float | None:
        """Seconds left at `now`, counted down since the last event; None before a speed."""
        if self.last is None:
            return None
        return max(0.0, self.last[1] - (now - self.last[0]))


def live_line(state: LiveState, width: int) -> str:
    """The live line for a terminal `width` columns wide (at most width - 1 characters, so the
    cursor never wraps): the step count always, then as many fields as fit, by PRIORITY."""
    logs = state.logs
    steps = f"step {state.step:,}/{state.total_steps:,}"
    fields: dict[str, str] = {"epoch": f"epoch {state.epoch}/{state.epochs}"}
    fields["left"] = f"{clock(state.seconds_left)} left"
    if logs is not None:
        fields["loss"] = f"{state.loss_name} {logs.loss:.4f}"
        fields["accuracy"] = f"acc {logs.accuracy:.2%}"
        fields["learning_rate"] = f"lr {logs.learning_rate:.2e}"
        fields["speed"] = f"{logs.images_per_second:,.0f} img/s"
    budget = max(width - 1, 0)
    chosen = {"steps": steps}
    used = len(steps)
    for key in PRIORITY:
        size = BAR_MIN if key == "bar" else len(fields.get(key, ""))
        if key != "bar" and key not in fields:
            continue
        if used + len(SEPARATOR) + size <= budget:
            chosen[key] = "" if key == "bar" else fields[key]
            used += len(SEPARATOR) + size
    if "bar" in chosen:
        bar = min(BAR_MAX, BAR_MIN + budget - used)
        done = round(bar * state.step / max(state.total_steps, 1))
        chosen["bar"] = "━" * done + "─" * (bar - done)
    return SEPARATOR.join(chosen[key] for key in ORDER if key in chosen)


class _LiveColumn(ProgressColumn):
    """The one column of the live display: live_line at the console's current width."""

    def __init__(self, reporter: RichReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Task) -> Text:
        state = self.reporter.state
        state.seconds_left = state.left_at(time.monotonic())
        return Text(
            live_line(self.reporter.state, self.reporter.console.width),
            no_wrap=True,
            overflow="crop",
        )


class PlainReporter:
    """One line every `train.log_every` steps and one per epoch: for logs and CI."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.loss = "loss"

    def start(self, plan: RunStart) -> None:
        self.loss = _loss_name(plan)
        self.console.print(_start_line(plan), soft_wrap=True)

    def update(self, logs: StepProgress) -> None:
        where = f"step {logs.step:,}/{logs.total_steps:,}  epoch {logs.epoch}"
        self.console.print(f"{where}  {_stats(logs, self.loss)}", soft_wrap=True)

    def epoch_end(self, logs: EpochEnd) -> None:
        self.console.print(_epoch_line(logs, self.loss), soft_wrap=True)

    def end(self) -> None:
        pass


class RichReporter(PlainReporter):
    """A live line over all steps (see live_line) above which the epoch lines scroll."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.state = LiveState(step=0, total_steps=1)
        self.progress = Progress(_LiveColumn(self), console=console, transient=False)
        self.task: Any = None

    def start(self, plan: RunStart) -> None:
        super().start(plan)
        self.state = LiveState(
            step=plan.start_step, total_steps=plan.total_steps, epochs=plan.epochs,
            epoch=plan.start_step // max(1, math.ceil(plan.num_train / plan.batch_size)) + 1,
            loss_name=self.loss,
        )  # fmt: skip
        self.progress.start()
        total, done = plan.total_steps, plan.start_step
        self.task = self.progress.add_task("train", total=total, completed=done)

    def update(self, logs: StepProgress) -> None:
        self.state.advance(logs, time.monotonic())
        self.progress.update(self.task, completed=logs.step)

    def epoch_end(self, logs: EpochEnd) -> None:
        self.progress.console.print(_epoch_line(logs, self.loss), soft_wrap=True)

    def end(self) -> None:
        self.progress.stop()

    def line(self, width: int | None = None) -> str:
        """The live line as it would show now at `width` (default: the console's width)."""
        return live_line(self.state, self.console.width if width is None else width)


def make_reporter(console: Console) -> PlainReporter:
    """A live line when the console is a terminal, plain lines otherwise."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
