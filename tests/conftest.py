"""Shared fixtures: no test ever downloads from the internet, and real data is optional."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `auto` execution settings are not measured in tests (no XLA, float32, one step per call: the
# same program on every machine); tests/test_tune.py turns measuring on where it tests it.
os.environ["DLINTRO_TUNE"] = "off"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Downloads are off and the default data directory is empty unless a test says otherwise;
    a download from any host but 127.0.0.1 fails the test (no test reaches the internet)."""
    from dlintro.data import download

    monkeypatch.setenv("DLINTRO_OFFLINE", "1")
    monkeypatch.delenv("DLINTRO_MIRROR", raising=False)
    monkeypatch.delenv("DLINTRO_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    real_open = download._open

    def loopback_only(url: str, timeout: float) -> object:
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"test tried to contact {url}"
        return real_open(url, timeout)

    monkeypatch.setattr(download, "_open", loopback_only)


@pytest.fixture
def mnist_dir() -> Path:
    """The shared real-data directory; the test is skipped when it is absent."""
    if not (SHARED_DATASETS / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_DATASETS}/mnist (clone next to shared/)")
    return SHARED_DATASETS


def synthetic_config(
    name: str,
    *,
    seed: int,
    num_train: int,
    num_test: int,
    batch_size: int,
    model: str | dict[str, Any] = "gorner_conv",
    data: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A tiny config (as a dict, for config.load(data=...)) on the synthetic dataset: the few
    values that matter to a test are named; `data` adds to the data section, other sections
    are taken as given."""
    return {
        "name": name,
        "seed": seed,
        "data": {
            "dataset": "synthetic",
            "params": {"num_train": num_train, "num_test": num_test},
            "batch_size": batch_size,
            **(data or {}),
        },
        "model": {"name": model} if isinstance(model, str) else model,
        **sections,
    }


def synthetic_yaml(
    name: str, *sections: str, seed: int | None = None, model_params: str = ""
) -> str:
    """A tiny config as YAML text (for tests that read a file): mlp5 on 64 + 32 synthetic
    images in batches of 16, with `seed` and the model's `params` (a flow mapping) when given,
    then `sections` (top-level lines, e.g. "train: {epochs: 2}") as written."""
    lines = [f"name: {name}", *([f"seed: {seed}"] if seed is not None else [])]
    lines += ["data:", "  dataset: synthetic", "  params: {num_train: 64, num_test: 32}"]
    lines += ["  batch_size: 16", "model:", "  name: mlp5"]
    lines += [f"  params: {model_params}"] if model_params else []
    return "\n".join([*lines, *sections, ""])


def train_epoch(bundle: Any, epoch: int = 0) -> tuple[Any, Any]:
    """Epoch `epoch` of a DataBundle's training stream as the model gets it (prepared), as
    numpy (images, labels): what training reads, in its order."""
    import numpy as np

    stream = bundle.train_stream(epoch * bundle.steps_per_epoch).take(bundle.steps_per_epoch)
    xs, ys = zip(*((bundle.prepare(x).numpy(), y.numpy()) for x, y in stream), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def write_config(path: Path, text: str) -> Path:
    """Write a YAML config for a test and return its path."""
    path.write_text(text)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(directory) -> base URL of an HTTP server on 127.0.0.1 serving it (test downloads)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
