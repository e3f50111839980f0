"""The `dlintro` command: parse, call the API, render with rich.

One module per group of commands (training, inspection, runs, artifacts); dlintro.cli.common
holds the app, the consoles and the error handling they share. TensorFlow is imported inside
the commands that need it, so `dlintro --help` is instant.
Exit codes: 0 success, 2 bad input (one line on stderr), 1 any other failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

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
    try:
        app()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if "tensorflow" in sys.modules:
        exit_now(code)
    sys.exit(code)


def exit_now(code: object) -> NoReturn:
    """End the process as sys.exit(code) would, without the interpreter's teardown: with
    TensorFlow loaded that took 0.7-0.8 s after every command had finished (2-core EPYC).
    Everything dlintro writes is closed before a command returns; only the standard streams
    and logging are left to flush."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(status)


__all__ = ["app", "artifacts", "exit_now", "inspection", "main", "runs", "sweep", "training"]
