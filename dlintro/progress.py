"""Training progress for people: a rich progress bar on a terminal, plain lines elsewhere.

The reporters take the events of dlintro.events (what dlintro.record.Recorder sends).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dlintro.events import EpochEnd, RunStart, StepProgress


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


def _start_line(plan: RunStart) -> str:
    extra = [line for line in (plan.distribution, plan.execution) if line]
    return "\n".join([_plain_start(plan), *extra])


def _plain_start(plan: RunStart) -> str:
    return (
        f"training {plan.model} ({plan.params:,} parameters) on {plan.dataset} "
        f"({plan.num_train:,} images): {plan.total_steps:,} steps = "
        f"{plan.epochs} epoch(s) of batch {plan.batch_size}; writing {plan.run_dir}"
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
    """A live progress bar over all steps with the latest loss, accuracy, rate and speed."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def start(self, plan: RunStart) -> None:
        super().start(plan)
        self.progress.start()
        self.task = self.progress.add_task(
            f"epoch 1/{plan.epochs}", total=plan.total_steps, stats=""
        )

    def update(self, logs: StepProgress) -> None:
        self.progress.update(
            self.task,
            completed=logs.step,
            description=f"epoch {logs.epoch}/{logs.epochs}",
            stats=_stats(logs, self.loss),
        )

    def epoch_end(self, logs: EpochEnd) -> None:
        self.progress.console.print(_epoch_line(logs, self.loss), soft_wrap=True)

    def end(self) -> None:
        self.progress.stop()


def make_reporter(console: Console) -> PlainReporter:
    """A progress bar when the console is a terminal, plain lines otherwise."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
