"""Keeping native (C++) chatter off the terminal: what TensorFlow, the TFLite converter and
their runtimes print on file descriptor 2, which Python's sys.stderr redirection never sees."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_off() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block; DLINTRO_DEBUG=1 leaves it open."""
    if os.environ.get("DLINTRO_DEBUG", "") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
