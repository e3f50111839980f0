"""Keeping native (C++) chatter off the terminal: what TensorFlow, the TFLite converter and
their runtimes print on file descriptor 2, which Python's sys.stderr redirection never sees."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any


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


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, whenever it is first needed, with its C++ start-up lines kept off
    stderr: TensorFlow 2.21 logs them through absl before logging is set up, ignoring
    TF_CPP_MIN_LOG_LEVEL, and a bad-input error must stay one line. Errors still raise."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
                return real.create_module(spec)

            def exec_module(self, module: Any) -> None:
                with native_stderr_off():
                    real.exec_module(module)

        spec.loader = Loader()
        return spec


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: its C++ logs errors only (unless TF_CPP_MIN_LOG_LEVEL
    is set), and its import goes through QuietTensorFlowImport. An import already done stays
    as it is; calling this twice installs one hook."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, QuietTensorFlowImport())
