"""The `dlintro` command: parse, call the API, render with rich.

One module per group of commands (training, inspection, runs, artifacts); dlintro.cli.common
holds the app, the consoles and the error handling they share. TensorFlow is imported inside
the commands that need it, so `dlintro --help` is instant.
Exit codes: 0 success, 2 bad input (one line on stderr), 1 any other failure.
"""

from __future__ import annotations

import sys

from dlintro.cli import artifacts, helptext, inspection, runs, sweep, training
from dlintro.cli.common import app

# `dlintro --help` lists the commands in this order (older than the split into modules)
ORDER = (
    "train", "launch", "tune", "env", "eval", "summary", "preview", "predict", "export", "models",
    "datasets", "list", "board", "runs", "compare", "sweep",
)  # fmt: skip
app.registered_commands.sort(key=lambda command: ORDER.index(command.name or ""))
helptext.tidy(app)  # one-line paragraphs and no `<bool>` in every command's --help


def main() -> None:
    """Entry point of the `dlintro` command."""
    for stream in (sys.stdout, sys.stderr):  # progress reaches a log file line by line
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    app()


__all__ = ["app", "artifacts", "inspection", "main", "runs", "sweep", "training"]
