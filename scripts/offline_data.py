"""Offline CIFAR-10 for the scripts: the JPEG copy of a data directory stands in for the archive.

A data directory laid out like ../shared/datasets may hold `cifar10_jpeg/{train,test}/<class>/`
(CIFAR-10 as JPEG folders) instead of the official archive `cifar10/`; these `--set` overrides
train the cifar10 configs from it with the image_folder dataset.
"""

from __future__ import annotations

from pathlib import Path


def data_overrides(dataset: str, data_dir: str | Path | None) -> list[str]:
    """`--set` overrides that read CIFAR-10 from the JPEG copy when the archive is absent."""
    if dataset != "cifar10" or not data_dir:
        return []
    root = Path(data_dir).resolve()
    jpeg = root / "cifar10_jpeg"
    if (root / "cifar10").is_dir() or not jpeg.is_dir():
        return []
    return ["data.dataset=image_folder", f"data.params={{path: {jpeg}, image_size: [32, 32]}}"]
