"""What every `dlintro` command shares: the typer app and its global options, the consoles,
the error handling that turns exceptions into one line and an exit code, the argument types
used by several commands, and the small formatting helpers.

Exit codes: 0 success, 2 bad input (one line on stderr), 1 any other failure.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from dlintro import __version__
from dlintro.errors import DlintroError
from dlintro.quiet import quiet_tensorflow

STARTED = time.time()  # wall times count from the command's start

app = typer.Typer(
    name="dlintro",
    help="Train image classifiers from a YAML file: the classic deep-learning ladder, "
    "reproducible.\n\nExample: dlintro train configs/mnist_conv.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": os.environ.get("DLINTRO_DEBUG", "") not in ("", "0")}

F = TypeVar("F", bound=Callable[..., Any])

ConfigArg = Annotated[Path, typer.Argument(help="A YAML config, such as configs/mnist_conv.yaml.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config key: --set data.batch_size=64 (repeatable)."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory laid out as <dir>/<dataset>/<official files> "
        "(default: $DLINTRO_DATA_DIR, else ~/.cache/dlintro/datasets).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
RunArg = Annotated[Path, typer.Argument(help="A run directory written by 'dlintro train'.")]


def handled(fn: F) -> F:
    """Turn dlintro errors into a one-line message and an exit code (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DlintroError as exc:
            if _state["debug"]:
                raise
            if exc.exit_code >= 128:  # stopped by a signal, with a checkpoint saved
                err.print(str(exc), soft_wrap=True, markup=False, style="yellow")
            else:
                err.print(f"error: {exc}", soft_wrap=True, markup=False, style="red")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted", style="yellow")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            msg = " ".join(str(exc).split())[:300]
            err.print(
                f"error: {type(exc).__name__}: {msg} (run with --debug for the traceback)",
                soft_wrap=True,
                markup=False,
                style="red",
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"dlintro {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True
    if not _state["debug"]:
        quiet_tensorflow()


def plural(n: int, word: str) -> str:
    """'1 epoch', '2,000 epochs'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage ('98.90%'); '-' when unknown. Every percentage the CLI
    prints goes through here."""
    return "-" if value is None else f"{value:.{digits}%}"
