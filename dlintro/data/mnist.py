"""MNIST and Fashion-MNIST: four official IDX files each, checked, downloaded when missing.

The files live at `<root>/<dataset>/` (see dlintro.data.download); they are parsed with numpy
(dlintro.data.idx) once per process and checked against the DatasetInfo.
"""

import functools
from pathlib import Path

from dlintro.data.download import ensure_files
from dlintro.data.idx import read_idx
from dlintro.data.sources import DATASETS, Arrays, DatasetInfo, FileSpec, readonly_arrays
from dlintro.errors import UserError

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
    return readonly_arrays(x_train, y_train, x_test, y_test)


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


__all__ = ["FASHION_MNIST_INFO", "MNIST_INFO", "load_idx_dataset"]
