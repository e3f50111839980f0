"""Stopping on request: SIGINT and SIGTERM end training at the next chunk boundary, after a
checkpoint, instead of at an arbitrary point inside a step."""

from __future__ import annotations

import signal
import threading
from typing import Any

from dlintro.errors import DlintroError


class Interrupted(DlintroError):
    """SIGINT or SIGTERM: a checkpoint was saved; exit 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopFlag:
    """While active, SIGINT and SIGTERM only set a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
