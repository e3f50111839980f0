"""Training progress for people: a rich progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _stats(logs: dict[str, Any]) -> str:
    return (
        f"loss {logs['loss']:.4f}  acc {logs['accuracy']:.2%}  lr {logs['learning_rate']:.2e}  "
        f"{logs['images_per_second']:,.0f} img/s"
    )


def _epoch_line(logs: dict[str, Any]) -> str:
    val = ""
    if logs["val_accuracy"] == logs["val_accuracy"]:  # not NaN: a validation split exists
        val = f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.2%}"
    return (
        f"epoch {logs['epoch']}/{logs['epochs']}  step {logs['step']:,}  loss {logs['loss']:.4f}  "
        f"acc {logs['accuracy']:.2%}{val}  {logs['seconds']:.1f} s  "
        f"{logs['images_per_second']:,.0f} img/s"
    )


def _start_line(plan: dict[str, Any]) -> str:
    if plan.get("distribution"):
        return f"{_plain_start(plan)}\n{plan['distribution']}"
    return _plain_start(plan)


def _plain_start(plan: dict[str, Any]) -> str:
    return (
        f"training {plan['model']} ({plan['params']:,} parameters) on {plan['dataset']} "
        f"({plan['num_train']:,} images): {plan['total_steps']:,} steps = "
        f"{plan['epochs']} epoch(s) of batch {plan['batch_size']}; writing {plan['run_dir']}"
    )


class PlainReporter:
    """One line every `train.log_every` steps and one per epoch: for logs and CI."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def start(self, plan: dict[str, Any]) -> None:
        self.console.print(_start_line(plan), soft_wrap=True)

    def update(self, logs: dict[str, Any]) -> None:
        self.console.print(
            f"step {logs['step']:,}/{logs['total_steps']:,}  epoch {logs['epoch']}  {_stats(logs)}",
            soft_wrap=True,
        )

    def epoch_end(self, logs: dict[str, Any]) -> None:
        self.console.print(_epoch_line(logs), soft_wrap=True)

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

    def start(self, plan: dict[str, Any]) -> None:
        super().start(plan)
        self.progress.start()
        self.task = self.progress.add_task(
            f"epoch 1/{plan['epochs']}", total=plan["total_steps"], stats=""
        )

    def update(self, logs: dict[str, Any]) -> None:
        self.progress.update(
            self.task,
            completed=logs["step"],
            description=f"epoch {logs['epoch']}/{logs['epochs']}",
            stats=_stats(logs),
        )

    def epoch_end(self, logs: dict[str, Any]) -> None:
        self.progress.console.print(_epoch_line(logs), soft_wrap=True)

    def end(self) -> None:
        self.progress.stop()


def make_reporter(console: Console) -> PlainReporter:
    """A progress bar when the console is a terminal, plain lines otherwise."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
