"""Dataset sources: what each dataset is (DatasetInfo), where its files live, how to load it.

A dataset builder is registered in `DATASETS` with its `DatasetInfo` as metadata and returns
`Arrays` (uint8 images [N,H,W,C], uint8 labels [N]). This module stays free of TensorFlow: the
CLI's `dlintro datasets` command uses it. Parsed arrays are cached per process and read-only.
"""

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
import pydantic

from dlintro.data.download import ensure_files, verify_files
from dlintro.data.idx import read_idx
from dlintro.errors import UserError
from dlintro.registry import ParamsError, Registry, validated


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


class Arrays(NamedTuple):
    """A dataset in memory: x uint8 [N,H,W,C], y uint8 [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


DATASETS: Registry[Callable[..., Arrays]] = Registry("dataset")

# Official files in the order train images, train labels, test images, test labels.
# fmt: off
MNIST_FILES = (
    FileSpec("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    FileSpec("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432",
             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    FileSpec("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3",
             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    FileSpec("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c",
             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)
FASHION_MNIST_FILES = (
    FileSpec("train-images-idx3-ubyte.gz", 26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    FileSpec("train-labels-idx1-ubyte.gz", 29515, "25c81989df183df01b3e8a0aad5dffbe",
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    FileSpec("t10k-images-idx3-ubyte.gz", 4422102, "bef4ecab320f06d8554ea6380940ec79",
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    FileSpec("t10k-labels-idx1-ubyte.gz", 5148, "bb300cfdad3c16e7a12a480ee83cd310",
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
)
# fmt: on

MNIST_INFO = DatasetInfo(
    name="mnist",
    description="MNIST handwritten digits, 28x28 grayscale, 10 classes",
    input_shape=(28, 28, 1),
    num_classes=10,
    class_names=tuple(str(i) for i in range(10)),
    files=MNIST_FILES,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    num_train=60000,
    num_test=10000,
)

FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist",
    description="Fashion-MNIST clothing images (Zalando), 28x28 grayscale, 10 classes",
    input_shape=(28, 28, 1),
    num_classes=10,
    class_names=(
        *("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"),
        *("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    files=FASHION_MNIST_FILES,
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    num_train=60000,
    num_test=10000,
)


def data_root(data_dir: str | Path | None = None) -> Path:
    """Where datasets live: the argument, else $DLINTRO_DATA_DIR, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DLINTRO_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "dlintro" / "datasets"


def check_builder_params(
    registry: Registry[Any], name: str, params: Mapping[str, Any], skip: tuple[str, ...] = ()
) -> None:
    """registry.check_params, with the builder and parameter named in the one-line message."""
    try:
        registry.check_params(name, params, skip=skip)
    except ParamsError as exc:
        loc, msg, _ = exc.errors[0]
        where = ".".join(str(part) for part in loc)
        raise ParamsError(
            f"{registry.kind} '{name}', parameter '{where}': {msg}", exc.errors
        ) from None


def dataset_info(name: str, params: Mapping[str, Any] | None = None) -> DatasetInfo:
    """The DatasetInfo of a registered dataset (for parametrized ones, with these params)."""
    meta = DATASETS.meta(name)
    if "info_for" in meta and params:
        check_builder_params(DATASETS, name, params, skip=("root",))
        return meta["info_for"](**params)
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
    check_builder_params(DATASETS, name, params, skip=("root",))
    load = DATASETS.meta(name).get("load")
    if load is not None:  # the info depends on the files read (image_folder): ask the loader
        info, arrays = load(Path(root), **params)
    else:
        info = dataset_info(name, params)
        arrays = DATASETS.get(name)(root=Path(root), **params)
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


def _readonly(*arrays: np.ndarray) -> Arrays:
    for a in arrays:
        a.flags.writeable = False
    return Arrays(*arrays)


def _check_pair(info: DatasetInfo, images: Path, labels: Path, expected: int) -> Arrays:
    x, y = read_idx(images), read_idx(labels)
    h, w, _ = info.input_shape
    if x.ndim != 3 or x.shape[1:] != (h, w):
        raise UserError(f"{images}: expected {h}x{w} images, found shape {x.shape}")
    if y.ndim != 1:
        raise UserError(f"{labels}: expected a 1-D label file, found shape {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    if len(x) != expected:
        raise UserError(f"{images}: expected {expected} images, found {len(x)}")
    if len(y) and int(y.max()) >= info.num_classes:
        raise UserError(f"{labels}: label {int(y.max())} out of range 0..{info.num_classes - 1}")
    return x.reshape(len(x), h, w, 1), y


@functools.lru_cache(maxsize=4)
def _parse_idx_dataset(info: DatasetInfo, directory: Path) -> Arrays:
    files = [directory / spec.name for spec in info.files]
    x_train, y_train = _check_pair(info, files[0], files[1], info.num_train)
    x_test, y_test = _check_pair(info, files[2], files[3], info.num_test)
    return _readonly(x_train, y_train, x_test, y_test)


def load_idx_dataset(info: DatasetInfo, root: Path) -> Arrays:
    """Ensure the four IDX files (size check or download), then parse them once per process."""
    directory = ensure_files(info, Path(root))
    return _parse_idx_dataset(info, directory.resolve())


@DATASETS.register("mnist", info=MNIST_INFO)
def mnist(root: Path) -> Arrays:
    """MNIST from `<root>/mnist/` (downloaded when missing)."""
    return load_idx_dataset(MNIST_INFO, root)


@DATASETS.register("fashion_mnist", info=FASHION_MNIST_INFO)
def fashion_mnist(root: Path) -> Arrays:
    """Fashion-MNIST from `<root>/fashion_mnist/` (downloaded when missing)."""
    return load_idx_dataset(FASHION_MNIST_INFO, root)


Count = Annotated[int, pydantic.Field(ge=1, le=1_000_000)]
MAX_SYNTHETIC_BYTES = 1 << 30


def synthetic_info(
    num_train: int = 256,
    num_test: int = 64,
    image_size: int = 28,
    channels: int = 1,
    num_classes: int = 10,
) -> DatasetInfo:
    """The DatasetInfo of `synthetic` for these parameters."""
    return DatasetInfo(
        name="synthetic",
        description="generated images, one bright patch per class (tests, smoke runs)",
        input_shape=(image_size, image_size, channels),
        num_classes=num_classes,
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
        files=(),
        mirrors=(),
        num_train=num_train,
        num_test=num_test,
    )


def _synthetic_split(n: int, size: int, channels: int, classes: int, seed: int) -> tuple:
    """Noise plus a bright square whose grid position encodes the class; learnable in steps."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.uint8)
    x = rng.integers(0, 64, size=(n, size, size, channels), dtype=np.uint8)
    grid = int(np.ceil(np.sqrt(classes)))
    cell = size // grid
    for c in range(classes):
        r, q = divmod(c, grid)
        x[y == c, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell, :] += 160
    return x, y


@functools.lru_cache(maxsize=8)
def _synthetic_arrays(
    num_train: int, num_test: int, image_size: int, channels: int, num_classes: int
) -> Arrays:
    train = _synthetic_split(num_train, image_size, channels, num_classes, seed=1234)
    test = _synthetic_split(num_test, image_size, channels, num_classes, seed=5678)
    return _readonly(*train, *test)


@DATASETS.register(
    "synthetic", info=synthetic_info(), info_for=synthetic_info, files="generated (no files)"
)
@validated
def synthetic(
    root: Path,
    num_train: Count = 256,
    num_test: Count = 64,
    image_size: Annotated[int, pydantic.Field(ge=4, le=512)] = 28,
    channels: Annotated[int, pydantic.Field(ge=1, le=4)] = 1,
    num_classes: Annotated[int, pydantic.Field(ge=2, le=256)] = 10,
) -> Arrays:
    """A deterministic generated dataset needing no files; `root` is ignored."""
    grid = int(np.ceil(np.sqrt(num_classes)))
    if image_size < grid:
        raise UserError(
            f"synthetic: image_size {image_size} is too small for {num_classes} classes "
            f"(needs at least {grid})"
        )
    if (num_train + num_test) * image_size * image_size * channels > MAX_SYNTHETIC_BYTES:
        raise UserError("synthetic: more than 1 GiB of images requested; use smaller params")
    return _synthetic_arrays(num_train, num_test, image_size, channels, num_classes)


ImageSize = Annotated[int, pydantic.Field(ge=32, le=1024)]


def imagenet_info(image_size: ImageSize = 224) -> DatasetInfo:
    """ImageNet's shapes at `image_size` (224; the tabled AlexNet wants 227)."""
    return DatasetInfo(
        name="imagenet",
        description=f"ImageNet ILSVRC-2012 shapes only ({image_size}x{image_size}x3, 1000 "
        "classes) for `dlintro summary`",
        input_shape=(image_size, image_size, 3),
        num_classes=1000,
        class_names=tuple(f"n{i}" for i in range(1000)),
        files=(),
        mirrors=(),
        num_train=1281167,
        num_test=50000,
    )


IMAGENET_INFO = imagenet_info()


@DATASETS.register(
    "imagenet", info=IMAGENET_INFO, info_for=imagenet_info, files="shapes only (for summary)"
)
@validated
def imagenet(root: Path, image_size: ImageSize = 224) -> Arrays:
    """Describes ImageNet's shapes; loading it is refused (no automatic download exists)."""
    raise UserError(
        "ImageNet cannot be downloaded automatically; the imagenet_* configs are reference "
        "architectures for `dlintro summary`; to train, use dataset image_folder with your copy"
    )


# The other dataset families register themselves into DATASETS on import.
from dlintro.data import cifar, folders  # noqa: E402, F401

__all__ = [
    "DATASETS",
    "FASHION_MNIST_INFO",
    "IMAGENET_INFO",
    "MNIST_INFO",
    "Arrays",
    "DatasetInfo",
    "FileSpec",
    "data_root",
    "dataset_info",
    "load_dataset",
    "load_idx_dataset",
    "status",
    "synthetic_info",
    "verify_files",
]
