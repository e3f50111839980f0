"""The dataset registry and its types: what a dataset is (DatasetInfo), where it lives, loading.

A dataset builder is registered in `DATASETS` with its `DatasetInfo` as metadata (`info`; for
parametrized datasets also `info_for(**params)`, and `load(root, **params) -> (info, arrays)`
when the info depends on the files read) and returns `Arrays` (uint8 images [N,H,W,C], uint8
labels [N]). This module imports no dataset family: `dlintro.data` imports them (mnist, cifar,
folders, synthetic). It stays free of TensorFlow: the CLI's `dlintro datasets` command uses it.
Parsed arrays are cached per process and read-only.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dlintro.errors import UserError
from dlintro.registry import Registry

SKIPPED_LISTED = 20  # skipped files named in meta.json
SKIPPED_SHOWN = 5  # skipped files named on the terminal


@dataclass(frozen=True)
class FileSpec:
    """One official file: its name and the size and checksums of the official bytes."""

    name: str
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is; `files` of IDX datasets: train images, train labels, test ditto."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    num_train: int
    num_test: int
    # files left out by a loader told to skip unreadable ones (image_folder, on_error: skip)
    skipped: tuple[str, ...] = ()
    # image folders: the folder the files are in, and the test images' paths relative to it
    # in the order of the test arrays (the report labels its images with them)
    root: str = ""
    test_files: tuple[str, ...] = ()

    def relative(self, path: str) -> str:
        """`path` relative to the dataset's root (as it is when there is no root)."""
        return os.path.relpath(path, self.root) if self.root else path

    def skipped_record(self, first: int = SKIPPED_LISTED) -> dict[str, Any]:
        """meta.json's record of the skipped files: {} when none, else {'skipped': {'count':
        N, 'first': [the first paths, relative to the root]}}."""
        if not self.skipped:
            return {}
        paths = [self.relative(p) for p in self.skipped[:first]]
        return {"skipped": {"count": len(self.skipped), "first": paths}}

    def skipped_note(self, first: int = SKIPPED_SHOWN) -> str:
        """One line for the user: how many files were skipped and which ('' when none)."""
        if not self.skipped:
            return ""
        paths = ", ".join(self.relative(p) for p in self.skipped[:first])
        more = len(self.skipped) - first
        rest = f" and {more:,} more" if more > 0 else ""
        where = f" in {self.root}" if self.root else ""
        return (
            f"skipped {len(self.skipped):,} unreadable image(s){where} (on_error: skip): "
            f"{paths}{rest}"
        )


class Arrays(NamedTuple):
    """A dataset in memory: x uint8 [N,H,W,C], y uint8 [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def readonly_arrays(*arrays: np.ndarray) -> Arrays:
    """Arrays of these four arrays, made read-only (they are cached and shared)."""
    for a in arrays:
        a.flags.writeable = False
    return Arrays(*arrays)


# `root` (the data directory) is supplied by dlintro; never set in a config's `data.params`.
DATASETS: Registry[Callable[..., Arrays]] = Registry("dataset", supplied=("root",))


def data_root(data_dir: str | Path | None = None, recorded: str | None = None) -> Path:
    """Where datasets live: the argument, else $DLINTRO_DATA_DIR, else `recorded` (the data
    directory a run trained on, if it is still there: a run reopened in a new shell without
    the setting it trained with), else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DLINTRO_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "dlintro" / "datasets"


def dataset_info(name: str, params: Mapping[str, Any] | None = None) -> DatasetInfo:
    """The DatasetInfo of a registered dataset (for parametrized ones, with these params)."""
    meta = DATASETS.meta(name)
    if "info_for" in meta and params:
        return DATASETS.apply(name, meta["info_for"], **params)
    return meta["info"]


def status(name: str, root: Path) -> dict[str, Any]:
    """Where a dataset's files are and whether each is present with the right size (no hashing)."""
    info = dataset_info(name)
    directory = Path(root).expanduser() / name
    files = []
    for spec in info.files:
        path = directory / spec.name
        size = path.stat().st_size if path.is_file() else None
        files.append(
            {
                "name": spec.name,
                "path": str(path),
                "present": size is not None,
                "size": size,
                "expected_size": spec.size,
                "size_ok": size == spec.size,
            }
        )
    return {
        "name": name,
        "description": info.description,
        "files_note": DATASETS.meta(name).get("files", ""),
        "directory": str(directory),
        "needs_files": bool(info.files),
        "files": files,
        "ready": all(f["size_ok"] for f in files),
    }


def load_dataset(
    name: str, root: Path, params: Mapping[str, Any] | None = None
) -> tuple[DatasetInfo, Arrays]:
    """Check params, load a dataset and check its arrays against its DatasetInfo."""
    params = dict(params or {})
    load = DATASETS.meta(name).get("load")
    if load is not None:  # the info depends on the files read (image_folder): ask the loader
        info, arrays = DATASETS.apply(name, load, Path(root), **params)
    else:
        info = dataset_info(name, params)
        arrays = DATASETS.create(name, Path(root), **params)
    for split, x, y, n in (
        ("train", arrays.x_train, arrays.y_train, info.num_train),
        ("test", arrays.x_test, arrays.y_test, info.num_test),
    ):
        if x.dtype != np.uint8 or x.shape != (n, *info.input_shape) or y.shape != (n,):
            raise UserError(
                f"{name}: {split} arrays have shapes {x.shape}/{y.shape} ({x.dtype}), "
                f"expected ({n}, {', '.join(map(str, info.input_shape))})/({n},) uint8"
            )
    return info, arrays


__all__ = [
    "DATASETS",
    "Arrays",
    "DatasetInfo",
    "FileSpec",
    "data_root",
    "dataset_info",
    "load_dataset",
    "readonly_arrays",
    "status",
]
