"""How the scripts load a config's dataset offline: the one place that decides it.

A data directory laid out like ../shared/datasets may hold `cifar10_jpeg/{train,test}/<class>/`
(CIFAR-10 as JPEG folders) instead of the official archive `cifar10/`; `data_overrides` gives
the `--set` overrides that train the cifar10 configs from it with the image_folder dataset.
`offline_config` applies them to a config (what a script trains in its own process, by dlintro
or by plain Keras), `offline_args` passes them to a `dlintro` command, `offline_arrays` loads
the arrays of such a config as dlintro does, and `plain_arrays` hands them to plain Keras
(float32, normalized like the config): every side of a comparison reads the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def data_overrides(dataset: str, data_dir: str | Path | None) -> list[str]:
    """`--set` overrides that read CIFAR-10 from the JPEG copy when the archive is absent."""
    if dataset != "cifar10" or not data_dir:
        return []
    from dlintro.data.cifar import jpeg_copy_overrides

    return jpeg_copy_overrides(Path(data_dir).resolve())


def config_path(name: str | Path) -> Path:
    """A config's file: a path as given, or a bare name in configs/ ("mnist_fast")."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else ROOT / "configs" / f"{name}.yaml"


def _overrides(name: str | Path, data_dir: str | Path | None) -> list[str]:
    from dlintro import config

    return data_overrides(config.load(config_path(name)).data.dataset, data_dir)


def offline_config(name: str | Path, data_dir: str | Path | None, extra: Sequence[str] = ()) -> Any:
    """The Config of `name` as it trains offline from `data_dir`, then the `extra` overrides."""
    from dlintro import config

    return config.load(config_path(name), [*_overrides(name, data_dir), *extra])


def offline_args(name: str | Path, data_dir: str | Path | None) -> list[str]:
    """The `--data-dir` and `--set` arguments of a `dlintro` command for the same data."""
    args = ["--data-dir", str(data_dir)] if data_dir else []
    for override in _overrides(name, data_dir):
        args += ["--set", override]
    return args


def offline_arrays(cfg: Any, data_dir: str | Path | None) -> tuple[Any, Any]:
    """(DatasetInfo, Arrays) of an offline_config's dataset, read as dlintro reads it."""
    from dlintro.data.sources import data_root, load_dataset

    return load_dataset(cfg.data.dataset, data_root(data_dir), cfg.data.params)


def plain_arrays(cfg: Any, data_dir: str | Path | None) -> tuple[Any, Any, Any]:
    """(info, arrays, prepare) for plain Keras: `prepare` turns uint8 images into float32
    NumPy arrays normalized like the config (x / 255 unless "none", then mean and std)."""
    import numpy as np

    from dlintro.data import normalization

    info, arrays = offline_arrays(cfg, data_dir)
    norm = normalization.compute(cfg.data.normalize, arrays.x_train)
    mean, std = np.float32(norm["mean"]), np.float32(norm["std"])
    divisor = 1.0 if norm["mode"] == "none" else 255.0

    def prepare(x: np.ndarray) -> np.ndarray:
        return ((x.astype("float32") / divisor - mean) / std).astype("float32")

    return info, arrays, prepare
