"""What every `dlintro` command shares: the typer app and its global options, the consoles,
the error handling that turns exceptions into one line and an exit code (dlintro's errors in
`handled`, Click's usage errors in the app's group, OneLineErrors), the argument types used by
several commands, and the small formatting helpers.

Exit codes: 0 success, 2 bad input (one line on stderr), 1 any other failure.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from dlintro import __version__
from dlintro.cli.helptext import Group
from dlintro.errors import DlintroError
from dlintro.quiet import quiet_tensorflow
from dlintro.registry import did_you_mean

STARTED = time.time()  # wall times count from the command's start


class OneLineErrors(Group):
    """The app's command group, its help tidied as every command's (helptext.Group): a usage
    error (a bad option value, an unknown option or command, a missing argument) is one line
    on stderr and exit code 2, as every other input error; `--help` keeps the usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # Click's exceptions (UsageError and the others)
            if not standalone_mode:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `dlintro` alone: help was shown
                sys.exit(exc.exit_code)
            words = list(sys.argv[1:] if args is None else args)
            named = next((w for w in words if not w.startswith("-")), "")
            command = f"dlintro {named}" if named in self.commands else "dlintro"
            line = usage_line(exc, command)
            err.print(f"error: {line}", soft_wrap=True, markup=False, style="red")
            sys.exit(exc.exit_code if exc.exit_code != 1 else 2)
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print("aborted", style="yellow")
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # an Exit's code (0 after --help, --version)


def usage_line(exc: Exception, command: str = "dlintro") -> str:
    """A Click usage error in one line, naming the option and pointing to the command's help:
    "--epochs: 0 is not >= 1 (see dlintro train --help)". `command`: the command line's, for
    errors that do not know their command."""
    ctx = getattr(exc, "ctx", None)
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    if len(names) > 1:
        command = " ".join(["dlintro", *reversed(names[:-1])])
    see = f" (see {command} --help)"
    kind, param = type(exc).__name__, getattr(exc, "param", None)
    message = str(getattr(exc, "message", "") or exc).strip()
    if kind == "NoSuchOption":
        option = str(getattr(exc, "option_name", ""))
        hint = did_you_mean(option, list(getattr(exc, "possibilities", None) or ()))
        return f"no such option {option}{hint}{see}"
    if kind == "MissingParameter" and param is not None:
        return f"missing {param.param_type_name} {_param_name(param)}{see}"
    if param is not None:
        return f"{_param_name(param)}: {_value_problem(exc, message)}{see}"
    if kind == "BadOptionUsage" and "requires an argument" in message:
        return f"{getattr(exc, 'option_name', '')}: needs a value{see}"
    found = re.match(r"No such command '([^']*)'", message)
    group = getattr(getattr(exc, "ctx", None), "command", None)
    if found and group is not None:
        hint = did_you_mean(found.group(1), list(getattr(group, "commands", {})))
        return f"no such command '{found.group(1)}'{hint}{see}"
    return f"{message[:1].lower()}{message[1:].rstrip('.')}{see}"


def _param_name(param: Any) -> str:
    """--epochs for an option (its long name), RUN_DIR for an argument."""
    if param.param_type_name == "option":
        opts = list(param.opts)
        return next((o for o in opts if o.startswith("--")), opts[0] if opts else param.name)
    return str(param.name or "").upper()


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}  # fmt: skip


def _value_problem(exc: Exception, message: str) -> str:
    """Why an option's value was refused: '0 is not >= 1', "'abc' is not a whole number"."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if not callable(errors):
        return f"{message[:1].lower()}{message[1:].rstrip('.')}"
    first = errors()[0]
    kind, ctx, value = first["type"], first.get("ctx") or {}, first.get("input")
    shown = str(value) if re.fullmatch(r"-?[0-9.eE+]+", str(value)) else repr(value)
    if kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        return f"{shown} is not {sign} {ctx.get(key)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{shown} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not true or false"
    if kind in ("literal_error", "enum"):
        return f"{shown} is not one of {ctx.get('expected')}"
    msg = str(first["msg"])
    return f"{shown}: {msg[:1].lower()}{msg[1:]}"


app = typer.Typer(
    cls=OneLineErrors,
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
        "(default: $DLINTRO_DATA_DIR, else for a run the one it trained on, else "
        "~/.cache/dlintro/datasets).",
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
