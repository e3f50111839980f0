"""Data: dataset sources (download, verify, parse), the tf.data pipeline and augmentations.

The dataset registry is `sources.DATASETS`; importing this package imports the dataset families
(mnist, cifar, folders, synthetic), which register themselves. `import dlintro.data` stays free
of TensorFlow: `build`, `build_test`, `DataBundle`, `AUGMENTATIONS` (the augment package),
`augmented_grid` and `write_png` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from dlintro.data import cifar, folders, mnist, synthetic  # noqa: F401  (register the datasets)
from dlintro.data.download import ensure_files, extract_tar, verify_files
from dlintro.data.sources import (
    DATASETS,
    Arrays,
    DatasetInfo,
    FileSpec,
    data_root,
    dataset_info,
    load_dataset,
    status,
)

_LAZY = {
    "build": "dlintro.data.pipeline",
    "build_test": "dlintro.data.pipeline",
    "DataBundle": "dlintro.data.pipeline",
    "AUGMENTATIONS": "dlintro.data.augment",
    "augmented_grid": "dlintro.data.preview",
    "write_png": "dlintro.data.preview",
}

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "Arrays",
    "DataBundle",
    "DatasetInfo",
    "FileSpec",
    "augmented_grid",
    "build",
    "build_test",
    "data_root",
    "dataset_info",
    "ensure_files",
    "extract_tar",
    "load_dataset",
    "status",
    "verify_files",
    "write_png",
]


def __getattr__(name: str) -> Any:
    """Import the TensorFlow-side names on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlintro.data' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
