"""Help pages that read well at any width: `tidy(app)` gives every command (and the app) a
command class that

- joins each paragraph of a docstring into one line before rich wraps it to the terminal
  (typer keeps the docstring's own line breaks after the first paragraph, so a sentence
  broke wherever the source line happened to end), and
- shows no type for plain flags (typer labels `--json`, `--force`, `--help` ... `<bool>`,
  although they take no value).
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def join_paragraphs(text: str | None) -> str | None:
    """Each paragraph of `text` (separated by blank lines) on one line; None stays None."""
    if text is None:
        return None
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _quiet_flags(command: Any, ctx: Any) -> None:
    """No type label for options that take no value."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""


class Command(TyperCommand):
    """A typer command whose help joins paragraph lines and labels no flag `<bool>`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = join_paragraphs(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _quiet_flags(self, ctx)
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A group tidied the same way (its own --version, --debug, --help); the app's group,
    cli.common.OneLineErrors, is one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = join_paragraphs(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _quiet_flags(self, ctx)
        super().format_help(ctx, formatter)


def tidy(app: typer.Typer) -> None:
    """Give every registered command of `app` the tidy command class above (the app's own
    group derives from Group); call it once every command is registered. A command with its
    own class keeps it."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
