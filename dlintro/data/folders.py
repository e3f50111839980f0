"""Image folders: a user's own PNG/JPEG images in one folder per class, decoded once into uint8.

Layout: `path/train/<class>/...` and `path/test/<class>/...` (the same class folders in both), or,
with `split`, `path/<class>/...` (or `path/train/<class>/...` alone) of which a seeded fraction of
each class is held out as the test set. Class names are the folder names in sorted order; files
are found recursively in sorted order, hidden files and folders and files without a .png, .jpg
or .jpeg suffix are ignored. Relative paths start at the current directory.

Images are screened and decoded by dlintro.data.imagefile: only regular files are read (a FIFO
or device named like an image counts as unreadable, and is never opened), their pixel count is
checked against the IMAGE_PIXELS limit from the header before decoding, then they are decoded
in parallel inside tf.data, converted to `channels` (grey <-> colour) and resized to
`image_size` with antialiased bilinear resampling when their size differs (aspect ratio not
kept). The decoded arrays are cached per process. An unreadable image is a UserError naming the
file with `on_error: fail`; with `on_error: skip` it is left out and its path listed in
`DatasetInfo.skipped` (the count is also in the description; `skipped_note` and
`skipped_record` say which, relative to the root). `load_eval_folder` reads a folder of class
folders as a test set for a trained run (`dlintro eval RUN --data PATH`). TensorFlow is imported
inside the functions.
"""

from __future__ import annotations

import functools
import inspect
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic

from dlintro.data.imagefile import IMAGE_SUFFIXES, decode_images, decode_problem, screen
from dlintro.data.sources import DATASETS, Arrays, DatasetInfo
from dlintro.errors import UserError
from dlintro.registry import validated

SPLIT_SEED = 0
MAX_CLASSES = 256  # labels are uint8

Side = Annotated[int, pydantic.Field(ge=1, le=4096)]
ImageSize = tuple[Side, Side] | Annotated[list[Side], pydantic.Field(min_length=2, max_length=2)]
Split = Annotated[float, pydantic.Field(gt=0.0, lt=1.0)]
OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class Listing:
    """The image files of a folder dataset; `stamp` (bytes, newest mtime) notices changes."""

    root: Path
    class_names: tuple[str, ...]
    train_files: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_files: tuple[str, ...]
    test_labels: tuple[int, ...]
    stamp: tuple[int, int]


def _resolve(path: str) -> Path:
    folder = Path(path).expanduser()
    where = folder if folder.is_absolute() else Path.cwd() / folder
    if not where.is_dir():
        raise UserError(
            f"image_folder: path '{path}' ({where}) is not a folder; give the folder holding "
            "train/<class>/ and test/<class>/ (relative paths start at the current directory)"
        )
    return where.resolve()


def _class_names(folder: Path) -> tuple[str, ...]:
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[:1] != ".")
    except OSError as exc:
        raise UserError(f"{folder}: cannot list ({exc.strerror or exc})") from None
    if not names:
        raise UserError(f"{folder}: no class folders; expected {folder}/<class>/<image files>")
    if len(names) > MAX_CLASSES:
        raise UserError(f"{folder}: {len(names)} class folders; at most {MAX_CLASSES} supported")
    return tuple(names)


def _images(folder: Path, stamp: list[int]) -> list[str]:
    """Image files under `folder`, recursively, sorted; adds sizes and mtimes to `stamp`."""
    found = []
    for top, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = sorted(d for d in dirs if d[:1] != ".")
        for name in sorted(files):
            if name[:1] != "." and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                path = os.path.join(top, name)
                try:
                    st = os.stat(path)
                    stamp[0] += st.st_size
                    stamp[1] = max(stamp[1], st.st_mtime_ns)
                except OSError:
                    pass  # a broken link or a loop: screened out as unreadable when decoded
                found.append(path)
    return found


def _collect(
    folder: Path, classes: tuple[str, ...], stamp: list[int], each: bool
) -> tuple[list[str], list[int]]:
    """Files and labels of `folder/<class>/`; `each`: every class needs an image."""
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images(folder / name, stamp)
        if each and not found:
            raise UserError(
                f"{folder / name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}); every "
                "class folder needs at least one"
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files, labels


def _split(
    files: list[str], labels: list[int], classes: tuple[str, ...], fraction: float, folder: Path
) -> tuple[list[int], list[int]]:
    """(train, test) positions: per class, a seeded permutation picks round(n * fraction)."""
    labels_a = np.asarray(labels)
    train: list[int] = []
    test: list[int] = []
    for label, name in enumerate(classes):
        members = np.flatnonzero(labels_a == label)
        rng = np.random.default_rng([SPLIT_SEED, zlib.crc32(name.encode())])
        n_test = min(round(len(members) * fraction), len(members) - 1)
        held = np.zeros(len(members), bool)
        held[rng.permutation(len(members))[:n_test]] = True
        test += members[held].tolist()
        train += members[~held].tolist()
    if not test:
        raise UserError(
            f"{folder}: split {fraction} of {len(files)} images leaves an empty test set; "
            "use a larger split"
        )
    return sorted(train), sorted(test)


def list_folder(path: str, split: float | None = None) -> Listing:
    """Find the classes and image files of a folder dataset (no decoding)."""
    root = _resolve(path)
    train_dir, test_dir = root / "train", root / "test"
    stamp = [0, 0]
    if train_dir.is_dir() and test_dir.is_dir():
        if split is not None:
            raise UserError(
                f"{root}: has train/ and test/ folders, so split {split} does not apply; "
                "remove data.params.split"
            )
        classes = _class_names(train_dir)
        test_classes = _class_names(test_dir)
        if test_classes != classes:
            missing = sorted(set(classes) - set(test_classes))
            extra = sorted(set(test_classes) - set(classes))
            raise UserError(
                f"{test_dir}: class folders differ from {train_dir} "
                f"(missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}); "
                "both need the same class folders"
            )
        train = _collect(train_dir, classes, stamp, each=True)
        test = _collect(test_dir, classes, stamp, each=False)
    elif test_dir.is_dir():
        raise UserError(f"{root}: has a test/ folder but no train/ folder next to it")
    else:
        source = train_dir if train_dir.is_dir() else root
        if split is None:
            raise UserError(
                f"{root}: no train/ and test/ folders; set data.params.split (e.g. 0.2) to hold "
                f"out that fraction of the images in {source} as the test set"
            )
        classes = _class_names(source)
        files, labels = _collect(source, classes, stamp, each=True)
        tr, te = _split(files, labels, classes, split, source)
        train = ([files[i] for i in tr], [labels[i] for i in tr])
        test = ([files[i] for i in te], [labels[i] for i in te])
    return Listing(
        root, classes, tuple(train[0]), tuple(train[1]), tuple(test[0]), tuple(test[1]),
        (stamp[0], stamp[1]),
    )  # fmt: skip


@functools.lru_cache(maxsize=2)
def _decoded(listing: Listing, image_size: tuple[int, int], channels: int) -> tuple:
    """(Arrays of the readable images, positions of the unreadable files), read-only, cached."""
    files = listing.train_files + listing.test_files
    images, ok = decode_images(files, image_size, channels)
    n = len(listing.train_files)
    labels = np.asarray(listing.train_labels + listing.test_labels, np.uint8)
    bad = np.flatnonzero(~ok)
    if len(bad):
        images, labels, n = images[ok], labels[ok], int(ok[:n].sum())
    arrays = Arrays(images[:n], labels[:n], images[n:], labels[n:])
    for a in (*arrays, bad):
        a.flags.writeable = False
    return arrays, bad


def _info(listing: Listing, image_size: tuple[int, int], channels: int, n_train: int,
          n_test: int, skipped: tuple[str, ...] = (),
          test_files: tuple[str, ...] = ()) -> DatasetInfo:  # fmt: skip
    note = f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""
    root = str(listing.root)
    return DatasetInfo(
        name="image_folder",
        description=(
            f"images from {listing.root}, {image_size[0]}x{image_size[1]}x{channels}, "
            f"{len(listing.class_names)} classes{note}"
        ),
        input_shape=(image_size[0], image_size[1], channels),
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        files=(),
        mirrors=(),
        num_train=n_train,
        num_test=n_test,
        skipped=skipped,
        root=root,
        test_files=tuple(os.path.relpath(f, root) for f in test_files),
    )


def _arguments(root: Path | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """image_folder's arguments for `params`, its defaults filled in (its signature is the one).

    The companions below are called through `DATASETS.apply`, which has already checked
    `params` against that signature (strict), so they take them without restating it.
    """
    bound = inspect.signature(image_folder).bind(root, **params)
    bound.apply_defaults()
    return bound.arguments


def _size(args: Mapping[str, Any]) -> tuple[int, int]:
    return int(args["image_size"][0]), int(args["image_size"][1])


def folder_info(**params: Any) -> DatasetInfo:
    """The DatasetInfo of an image folder from its listing alone (no decoding; counts all files)."""
    args = _arguments(None, params)
    listing = list_folder(args["path"], args["split"])
    n_train, n_test = len(listing.train_files), len(listing.test_files)
    return _info(listing, _size(args), args["channels"], n_train, n_test)


def _load(args: Mapping[str, Any]) -> tuple[DatasetInfo, Arrays]:
    """List, decode (once per process) and check an image folder; `root` is not used."""
    size, channels = _size(args), args["channels"]
    listing = list_folder(args["path"], args["split"])
    arrays, bad = _decoded(listing, size, channels)
    files = listing.train_files + listing.test_files
    if len(bad) and args["on_error"] == "fail":
        _refuse(files[bad[0]], len(bad), size, channels)
    for name, x in (("training", arrays.x_train), ("test", arrays.x_test)):
        if not len(x):
            raise UserError(f"{listing.root}: no readable {name} images ({len(bad)} skipped)")
    skipped = tuple(files[i] for i in bad)
    bad_set = set(bad.tolist())
    n = len(listing.train_files)
    test_files = tuple(f for i, f in enumerate(files) if i >= n and i not in bad_set)
    info = _info(
        listing, size, channels, len(arrays.x_train), len(arrays.x_test), skipped, test_files
    )
    return info, arrays


def _refuse(first: str, count: int, size: tuple[int, int], channels: int) -> None:
    """The UserError of `on_error: fail`: the first unreadable file and why, and how many."""
    more = f" ({count - 1} more unreadable file(s))" if count > 1 else ""
    fix = "; fix or remove it, or set data.params.on_error: skip to leave unreadable images out"
    problem = screen(first)
    if problem:
        raise UserError(f"{first}: {problem}{more}{fix}")
    reason = decode_problem(first, size, channels) or "unreadable"
    raise UserError(f"{first}: cannot decode this image ({reason}){more}{fix}")


def load_image_folder(root: Path, **params: Any) -> tuple[DatasetInfo, Arrays]:
    """(DatasetInfo, Arrays) of an image folder: the info depends on the files that decode."""
    return _load(_arguments(root, params))


def load_eval_folder(
    path: str,
    class_names: tuple[str, ...],
    image_size: tuple[int, int],
    channels: int,
    on_error: str = "fail",
) -> tuple[DatasetInfo, np.ndarray, np.ndarray]:
    """An image folder as a test set for a trained run: (info, images uint8, labels int32).

    `path` holds class folders (all their images are the test set), or train/ and test/
    folders (test/ is used). Every class folder must be named after one of the run's
    `class_names` (a subset is fine); labels are the run's class indices. Images are screened
    and decoded as for training; `on_error` as image_folder's. Nothing is cached or written.
    """
    root = _resolve(path)
    folder = root
    if (root / "test").is_dir() and "test" not in class_names:
        folder = root / "test"
    classes = _class_names(folder)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        known = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise UserError(
            f"{folder}: class folder(s) {', '.join(unknown[:5])} are not classes of the run "
            f"({known}); each class folder must be named after one of them"
        )
    files, found = _collect(folder, classes, [0, 0], each=False)
    labels = np.asarray([index[classes[i]] for i in found], np.int32)
    images, ok = decode_images(tuple(files), image_size, channels)
    bad = np.flatnonzero(~ok)
    if len(bad) and on_error == "fail":
        _refuse(files[bad[0]], len(bad), image_size, channels)
    if not ok.any():
        raise UserError(f"{folder}: no readable images ({len(bad)} unreadable)")
    kept = [f for f, good in zip(files, ok, strict=True) if good]
    info = DatasetInfo(
        name="image_folder",
        description=f"images from {folder}, {len(kept)} of {len(classes)} classes",
        input_shape=(image_size[0], image_size[1], channels),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        files=(),
        mirrors=(),
        num_train=0,
        num_test=len(kept),
        skipped=tuple(files[i] for i in bad),
        root=str(root),
        test_files=tuple(os.path.relpath(f, root) for f in kept),
    )
    return info, images[ok], labels[ok]


PLACEHOLDER_INFO = DatasetInfo(
    name="image_folder",
    description="your own images: data.params.path holds train/<class>/ and test/<class>/",
    input_shape=(32, 32, 3),
    num_classes=0,
    class_names=(),
    files=(),
    mirrors=(),
    num_train=0,
    num_test=0,
)


@DATASETS.register(
    "image_folder",
    info=PLACEHOLDER_INFO,
    info_for=folder_info,
    load=load_image_folder,
    files="your folders (data.params.path)",
)
@validated
def image_folder(
    root: Path,
    path: str,
    image_size: ImageSize = (32, 32),
    channels: Literal[1, 3] = 3,
    split: Split | None = None,
    on_error: OnError = "fail",
) -> Arrays:
    """PNG/JPEG images in class folders under `path` (see the module docstring)."""
    return _load(locals())[1]  # locals() here: exactly this call's (validated) arguments


__all__ = [
    "IMAGE_SUFFIXES",
    "Listing",
    "decode_images",
    "decode_problem",
    "folder_info",
    "list_folder",
    "load_eval_folder",
    "load_image_folder",
    "screen",
]
