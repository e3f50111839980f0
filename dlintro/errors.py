"""Error types that the CLI turns into exit codes: input errors exit 2, the rest exit 1."""

from __future__ import annotations


class DlintroError(Exception):
    """A failure that is not the input's fault; exit code 1."""

    exit_code = 1


class UserError(DlintroError):
    """Bad input (config, arguments, data files, run directories); exit code 2, one line."""

    exit_code = 2
