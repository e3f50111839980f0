"""CIFAR-10 and CIFAR-100 from the official binary archives, parsed with numpy (never pickle).

`<root>/<dataset>/<archive>` is downloaded when missing (mirrors, `DLINTRO_MIRROR`, checks as for
MNIST), its sha256 checked once and extracted safely to `<root>/<dataset>/extracted/`; a
folder extracted by hand (`<root>/cifar10/cifar-10-batches-bin/`) is used as it is. A record is
the label byte(s) (CIFAR-100: coarse, then fine) followed by 3072 pixel bytes, channel-planar
(1024 R, 1024 G, 1024 B, each 32x32 row-major); images come out as uint8 [N, 32, 32, 3].
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dlintro import limits
from dlintro.data.download import WHERE_HINT, ensure_files, extract_tar, sha256_of
from dlintro.data.sources import DATASETS, Arrays, DatasetInfo, FileSpec
from dlintro.errors import UserError
from dlintro.registry import validated

SIDE = 32
PIXELS = 3 * SIDE * SIDE
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
EXTRACTED = "extracted"  # <root>/<dataset>/extracted/<archive folder>/
NOT_FOUND = "file not found (an incomplete folder? delete it to extract the archive again)"


@dataclass(frozen=True)
class CifarLayout:
    """What an extracted archive holds: its folder, record files and class-name files."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int
    name_files: tuple[str, ...]  # one per label byte, in record order


CIFAR10_LAYOUT = CifarLayout(
    folder="cifar-10-batches-bin",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test=("test_batch.bin",),
    label_bytes=1,
    name_files=("batches.meta.txt",),
)
CIFAR100_LAYOUT = CifarLayout(
    folder="cifar-100-binary",
    train=("train.bin",),
    test=("test.bin",),
    label_bytes=2,
    name_files=("coarse_label_names.txt", "fine_label_names.txt"),
)

# fmt: off
CIFAR10_ARCHIVE = FileSpec(
    "cifar-10-binary.tar.gz", 170052171, "c32a1d4ab5d03f1284b67883e8d87530",
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
CIFAR100_ARCHIVE = FileSpec(
    "cifar-100-binary.tar.gz", 168513733, "03b5dce01913d631647c71ecec9e9cb8",
    "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
# fmt: on

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    description="CIFAR-10 tiny images (Krizhevsky 2009), 32x32 RGB, 10 classes",
    input_shape=(SIDE, SIDE, 3),
    num_classes=10,
    class_names=CIFAR10_CLASSES,
    files=(CIFAR10_ARCHIVE,),
    mirrors=MIRRORS,
    num_train=50000,
    num_test=10000,
)


def cifar100_info(label_mode: Literal["fine", "coarse"] = "fine") -> DatasetInfo:
    """The DatasetInfo of `cifar100` with 100 fine or 20 coarse classes."""
    names = CIFAR100_FINE if label_mode == "fine" else CIFAR100_COARSE
    return DatasetInfo(
        name="cifar100",
        description=f"CIFAR-100 tiny images, 32x32 RGB, {len(names)} {label_mode} classes",
        input_shape=(SIDE, SIDE, 3),
        num_classes=len(names),
        class_names=names,
        files=(CIFAR100_ARCHIVE,),
        mirrors=MIRRORS,
        num_train=50000,
        num_test=10000,
    )


def parse_records(raw: bytes, source: str, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records -> (images uint8 [N,32,32,3], labels uint8 [N, label_bytes])."""
    record = label_bytes + PIXELS
    count, extra = divmod(len(raw), record)
    if extra or not count:
        raise UserError(
            f"{source}: {len(raw)} bytes is not a whole number of {record}-byte records "
            f"({count} records and {extra} bytes); truncated or not a CIFAR binary file"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(count, record)
    labels = rows[:, :label_bytes].copy()
    images = rows[:, label_bytes:].reshape(count, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_records(
    path: Path, label_bytes: int, max_records: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one record file (see `parse_records`); problems are UserErrors naming the file.

    Only a regular file is read (a link to a device or a FIFO is refused by name), and only if
    its size is at most `max_records` records (default: the DATA_FILE_BYTES limit)."""
    limit = limits.DATA_FILE_BYTES
    max_bytes, text = limit.value(), limit.text()
    if max_records is not None and max_records * (label_bytes + PIXELS) < max_bytes:
        max_bytes = max_records * (label_bytes + PIXELS)
        text = f"{max_records:,} records of {label_bytes + PIXELS} bytes (the whole split)"
    try:
        raw = limits.read_regular(path, max_bytes, text)
    except FileNotFoundError:
        raise UserError(f"{path}: {NOT_FOUND}") from None
    return parse_records(raw, str(path), label_bytes)


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names, one per non-empty line (batches.meta.txt, *_label_names.txt): a regular
    UTF-8 file of at most 1 MiB."""
    try:
        text = limits.read_regular(path, limits.TEXT_FILE_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: {NOT_FOUND}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read class names ({exc})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _check_names(path: Path, expected_count: int, expected: tuple[str, ...] | None) -> None:
    names = read_class_names(path)
    if len(names) != expected_count:
        raise UserError(
            f"{path}: {len(names)} class names, expected {expected_count}; not the official file"
        )
    if expected is not None and names != expected:
        bad = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
        raise UserError(
            f"{path}: class {bad} is named {names[bad]!r}, expected {expected[bad]!r}; "
            "not the official file"
        )


@functools.lru_cache(maxsize=2)
def _parse_folder(
    layout: CifarLayout, folder: Path, counts: tuple[int, ...], num_train: int, num_test: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All records of an extracted folder: x_train, labels_train, x_test, labels_test."""
    out = []
    for files, expected in ((layout.train, num_train), (layout.test, num_test)):
        parts = [
            (name, *read_records(folder / name, layout.label_bytes, expected)) for name in files
        ]
        for name, _, labels in parts:
            for byte, classes in enumerate(counts):
                top = int(labels[:, byte].max())
                if top >= classes:
                    which = f" ({layout.name_files[byte]})" if len(counts) > 1 else ""
                    raise UserError(
                        f"{folder / name}: label {top}{which} out of range 0..{classes - 1}"
                    )
        found = sum(len(x) for _, x, _ in parts)
        if found != expected:
            raise UserError(
                f"{folder}: {' + '.join(files)} hold {found} records, expected {expected}"
            )
        x = np.concatenate([x for _, x, _ in parts]) if len(parts) > 1 else parts[0][1]
        y = np.concatenate([y for _, _, y in parts]) if len(parts) > 1 else parts[0][2]
        x.flags.writeable = False
        out += [x, y]
    return tuple(out)  # type: ignore[return-value]


def extracted_folder(info: DatasetInfo, layout: CifarLayout, root: Path) -> Path:
    """The folder holding the record files: found, or made from the archive (downloaded if need be).

    The archive's sha256 is checked before its first extraction (a one-time cost).
    """
    directory = Path(root).expanduser() / info.name
    spec = info.files[0]
    found = record_folder(info, layout, root)
    if found is not None:
        return found
    target = directory / EXTRACTED
    if target.exists():
        raise UserError(
            f"{target}: has no {layout.folder}/ folder inside; delete {target} to extract "
            f"{spec.name} again"
        )
    directory = ensure_files(info, Path(root))
    archive = directory / spec.name
    actual = sha256_of(archive)
    if actual != spec.sha256:
        raise UserError(
            f"{archive}: checksum mismatch: expected sha256 {spec.sha256}, got {actual} "
            f"(not the official file; delete it to re-download, "
            f"{WHERE_HINT.format(name=info.name)})"
        )
    extract_tar(archive, target)
    if not (target / layout.folder).is_dir():
        raise UserError(
            f"{archive}: holds no {layout.folder}/ folder; not the official {info.name} archive"
        )
    return target / layout.folder


def load_cifar(info: DatasetInfo, layout: CifarLayout, root: Path, label_byte: int = -1) -> Arrays:
    """Ensure, extract and parse a CIFAR dataset once per process; `label_byte` picks the label.

    `info` gives the archive, expected counts and class names (checked against the name file of
    the chosen label); the other label byte is range-checked against its own name file.
    """
    folder = extracted_folder(info, layout, root)
    label_byte = label_byte % layout.label_bytes
    counts = []
    for byte, name in enumerate(layout.name_files):
        chosen = byte == label_byte
        expected_names = info.class_names if chosen else None
        expected_count = info.num_classes if chosen else len(read_class_names(folder / name))
        _check_names(folder / name, expected_count, expected_names)
        counts.append(expected_count)
    x, labels, xt, labels_t = _parse_folder(
        layout, folder.resolve(), tuple(counts), info.num_train, info.num_test
    )
    y, yt = labels[:, label_byte].copy(), labels_t[:, label_byte].copy()
    y.flags.writeable = yt.flags.writeable = False
    return Arrays(x, y, xt, yt)


def record_folder(info: DatasetInfo, layout: CifarLayout, root: Path) -> Path | None:
    """The folder of record files under `<root>/<dataset>/` (extracted by hand or by dlintro),
    or None."""
    directory = Path(root).expanduser() / info.name
    candidates = (directory / layout.folder, directory / EXTRACTED / layout.folder)
    return next((c for c in candidates if c.is_dir()), None)


def present(info: DatasetInfo, layout: CifarLayout, root: Path) -> bool:
    """Whether `<root>/<dataset>/` holds the official data: its archive or its record folder."""
    if record_folder(info, layout, root) is not None:
        return True
    directory = Path(root).expanduser() / info.name
    return all((directory / spec.name).is_file() for spec in info.files)


def jpeg_copy_overrides(root: Path) -> list[str]:
    """The `--set` overrides that train a cifar10 config on `<root>/cifar10_jpeg/` (CIFAR-10
    as JPEG folders, as ../shared/datasets holds it) where the official data is absent; []
    where it is present or there is no copy."""
    jpeg = Path(root).expanduser() / "cifar10_jpeg"
    if present(CIFAR10_INFO, CIFAR10_LAYOUT, root) or not jpeg.is_dir():
        return []
    return ["data.dataset=image_folder", f"data.params={{path: {jpeg}, image_size: [32, 32]}}"]


@DATASETS.register("cifar10", info=CIFAR10_INFO)
def cifar10(root: Path) -> Arrays:
    """CIFAR-10 from `<root>/cifar10/` (the binary archive, downloaded when missing)."""
    try:
        return load_cifar(CIFAR10_INFO, CIFAR10_LAYOUT, root)
    except UserError as exc:
        overrides = jpeg_copy_overrides(root)
        if not overrides:
            raise
        where = Path(root).expanduser() / "cifar10_jpeg"
        arguments = shlex.join(a for o in overrides for a in ("--set", o))
        raise UserError(
            f"{exc}; or train on the JPEG copy of CIFAR-10 in {where}: {arguments}"
        ) from None


@DATASETS.register("cifar100", info=cifar100_info(), info_for=cifar100_info)
@validated
def cifar100(root: Path, label_mode: Literal["fine", "coarse"] = "fine") -> Arrays:
    """CIFAR-100 from `<root>/cifar100/`; label_mode picks the 100 fine or 20 coarse labels."""
    info = cifar100_info(label_mode)
    return load_cifar(info, CIFAR100_LAYOUT, root, label_byte=1 if label_mode == "fine" else 0)


__all__ = [
    "CIFAR10_INFO",
    "CIFAR10_LAYOUT",
    "CIFAR100_LAYOUT",
    "CifarLayout",
    "cifar100_info",
    "extracted_folder",
    "jpeg_copy_overrides",
    "load_cifar",
    "parse_records",
    "present",
    "read_class_names",
    "read_records",
    "record_folder",
]
