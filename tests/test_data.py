"""Data layer: IDX parsing, dataset sources, the tf.data pipeline and augmentations."""

import gzip
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from dlintro.data import mnist, sources
from dlintro.data.download import verify_files
from dlintro.data.idx import read_idx, write_idx
from dlintro.errors import UserError
from dlintro.registry import ParamsError, UnknownNameError
from tests.conftest import train_epoch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """These tests never download: offline, no mirror, no data dir from the environment."""
    monkeypatch.setenv("DLINTRO_OFFLINE", "1")
    for var in ("DLINTRO_MIRROR", "DLINTRO_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


def _real_root(name: str = "mnist") -> Path:
    info = sources.dataset_info(name)
    if not all((SHARED / name / f.name).is_file() for f in info.files):
        pytest.skip(f"real {name} files not found in {SHARED / name}")
    return SHARED


# ---------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)])
def test_idx_round_trip(tmp_path, name, shape):
    array = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")


HEADER_3x4x4 = bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "not an IDX file: bad magic 01 00 08 01"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4, "unsupported IDX data type 0x0d"),
        (bytes([0, 0, 8, 5]) + b"\0" * 20, "bad number of dimensions 5 (expected 1 to 4)"),
        (bytes([0, 0, 8, 0]), "bad number of dimensions 0"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 3]), "truncated header: 3 dimensions need 16 bytes"),
        (HEADER_3x4x4 + b"\1" * 10, "truncated: header says 3x4x4 = 48 bytes of data, found 10"),
        (HEADER_3x4x4 + b"\1" * 50, "trailing bytes: header says 3x4x4 = 48 bytes of data"),
        (b"\0\0", "too short for an IDX header (2 bytes)"),
        (gzip.compress(HEADER_3x4x4), "the data looks gzip-compressed"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_rejects_bad_files(tmp_path, data, problem, compress):
    path = tmp_path / ("bad-idx.gz" if compress else "bad-idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(UserError) as exc:
        read_idx(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert problem in str(exc.value)
    assert "\n" not in str(exc.value)


def test_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(HEADER_3x4x4 + bytes(range(48)) * 100)
    cases = {
        "cut.gz": good[: len(good) // 2],
        "flipped.gz": good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:],
        "plain.gz": HEADER_3x4x4 + bytes(48),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match="corrupt or truncated gzip data") as exc:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(exc.value)
    with pytest.raises(UserError, match="file not found"):
        read_idx(tmp_path / "missing.gz")


# ------------------------------------------------------------------------------------ sources


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert sources.data_root() == tmp_path / "home" / ".cache" / "dlintro" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.data_root() == tmp_path / "xdg" / "dlintro" / "datasets"
    monkeypatch.setenv("DLINTRO_DATA_DIR", str(tmp_path / "env"))
    assert sources.data_root() == tmp_path / "env"
    assert sources.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert sources.data_root(str(tmp_path / "arg")) == tmp_path / "arg"


def test_registry_names_and_infos():
    assert {"mnist", "fashion_mnist", "synthetic"} <= set(sources.DATASETS.names())
    fashion = sources.dataset_info("fashion_mnist")
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert sources.dataset_info("mnist").class_names == tuple("0123456789")
    assert sum(f.size for f in mnist.MNIST_INFO.files) == 11594722
    with pytest.raises(UnknownNameError, match="did you mean 'mnist'"):
        sources.dataset_info("mnsit")


def test_real_mnist_loads(tmp_path):
    root = _real_root("mnist")
    info, (x, y, xt, yt) = sources.load_dataset("mnist", root)
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert y.shape == (60000,) and yt.shape == (10000,)
    assert x.dtype == y.dtype == np.uint8
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert not x.flags.writeable and not y.flags.writeable
    again = sources.load_dataset("mnist", root)[1]
    assert again.x_train is x  # parsed once per process
    assert all(r["ok"] for r in verify_files(info, root))
    assert sources.status("mnist", root)["ready"]
    assert not sources.status("mnist", tmp_path)["ready"]


def test_real_fashion_mnist_loads():
    root = _real_root("fashion_mnist")
    info, arrays = sources.load_dataset("fashion_mnist", root)
    assert arrays.x_train.shape == (60000, 28, 28, 1)
    assert np.bincount(arrays.y_train).tolist() == [6000] * 10
    assert np.bincount(arrays.y_test).tolist() == [1000] * 10
    assert all(r["ok"] for r in verify_files(info, root))


def test_truncated_or_altered_copy_is_named(tmp_path):
    real = _real_root("mnist") / "mnist"
    shutil.copytree(real, tmp_path / "mnist")
    for f in (tmp_path / "mnist").iterdir():
        f.chmod(0o644)
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    with pytest.raises(UserError) as exc:
        sources.load_dataset("mnist", tmp_path)
    msg = str(exc.value)
    assert str(labels) in msg and "size 1000 bytes, expected 28881" in msg
    assert "delete it to re-download" in msg
    # same size, other bytes: the size check passes, the full check and the parser do not
    shutil.copy(real / labels.name, labels)
    test_labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    test_labels.write_bytes(os.urandom(4542))
    rows = {r["name"]: r for r in verify_files(mnist.MNIST_INFO, tmp_path)}
    assert rows[labels.name]["ok"] and not rows[test_labels.name]["ok"]
    assert rows[test_labels.name]["problem"].startswith("sha256 ")
    with pytest.raises(UserError, match="corrupt or truncated gzip") as exc:
        sources.load_dataset("mnist", tmp_path)
    assert str(test_labels) in str(exc.value)


def _tiny_info(tmp_path, x, y, xt, yt, name="tiny"):
    """A 4-file IDX dataset written under tmp_path/<name>, with its DatasetInfo."""
    (tmp_path / name).mkdir(exist_ok=True)
    specs = []
    for fname, arr in zip(
        ("tr-img.gz", "tr-lbl.gz", "te-img.gz", "te-lbl.gz"), (x, y, xt, yt), strict=True
    ):
        write_idx(tmp_path / name / fname, arr)
        specs.append(sources.FileSpec(fname, (tmp_path / name / fname).stat().st_size, "", ""))
    return sources.DatasetInfo(
        name, "tiny", (28, 28, 1), 10, tuple("0123456789"), tuple(specs), (), len(x), len(xt)
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"y": np.full(7, 10, np.uint8)}, "tr-lbl.gz: label 10 out of range 0..9"),
        ({"y": np.zeros(6, np.uint8)}, "holds 7 images but"),
        ({"x": np.zeros((7, 28, 27), np.uint8)}, "tr-img.gz: expected 28x28 images"),
        ({"yt": np.zeros((3, 1), np.uint8)}, "te-lbl.gz: expected a 1-D label file"),
    ],
)
def test_idx_dataset_checks(tmp_path, change, problem):
    arrays = {"x": np.zeros((7, 28, 28), np.uint8), "y": np.zeros(7, np.uint8)}
    arrays |= {"xt": np.zeros((3, 28, 28), np.uint8), "yt": np.zeros(3, np.uint8)}
    arrays |= change
    info = _tiny_info(tmp_path, **arrays)
    with pytest.raises(UserError, match=problem):
        mnist.load_idx_dataset(info, tmp_path)


def test_synthetic_dataset():
    info, a = sources.load_dataset("synthetic", Path("/nonexistent"))
    assert a.x_train.shape == (256, 28, 28, 1) and a.x_test.shape == (64, 28, 28, 1)
    assert a.x_train.dtype == np.uint8 and set(np.unique(a.y_train)) == set(range(10))
    assert info.num_classes == 10 and info.files == ()
    # the class is in the patch: the class-0 patch is brighter for class 0 than for the others
    patch = a.x_train[:, :7, :7, 0].mean(axis=(1, 2))
    assert patch[a.y_train == 0].min() > patch[a.y_train != 0].max()
    params = {"num_train": 30, "num_test": 5, "image_size": 8, "channels": 3, "num_classes": 4}
    info, b = sources.load_dataset("synthetic", Path("/x"), params)
    assert b.x_train.shape == (30, 8, 8, 3) and info.input_shape == (8, 8, 3)
    assert info.num_classes == 4 and len(info.class_names) == 4
    again = sources.load_dataset("synthetic", Path("/x"), params)[1]
    np.testing.assert_array_equal(again.x_test, b.x_test)
    with pytest.raises(ParamsError, match="greater than or equal to 4"):
        sources.load_dataset("synthetic", Path("/x"), {"image_size": 2})
    with pytest.raises(ParamsError, match=r"parameter 'num_trian': unknown .*'num_train'"):
        sources.load_dataset("synthetic", Path("/x"), {"num_trian": 2})
    with pytest.raises(UserError, match="too small for 100 classes"):
        sources.load_dataset("synthetic", Path("/x"), {"image_size": 8, "num_classes": 100})
    with pytest.raises(ParamsError, match="unknown parameter"):
        sources.load_dataset("mnist", Path("/x"), {"size": 3})


def test_import_without_tensorflow():
    code = (
        "import sys, dlintro.data as d; d.AUGMENTATIONS.names(); d.dataset_info('mnist');"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------- pipeline


def _cfg(**kw):
    base = dict(dataset="synthetic", params={}, batch_size=48, validation_split=0.0)
    base |= dict(normalize="unit", augment=[], cache=False)
    return NS(**(base | kw))


def _epoch(ds):
    """All batches of one pass as (images, labels) numpy arrays."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _as_uint8(images):
    return np.rint(images * 255).astype(np.uint8)


def test_pipeline_shapes_and_dtypes():
    from dlintro.data import build

    b = build(_cfg(), seed=0)
    assert (b.num_train, b.num_validation, b.num_test, b.steps_per_epoch) == (256, 0, 64, 6)
    assert b.validation is None and b.info.name == "synthetic"
    sizes = []
    for x, y in b.train_stream(0).take(7):  # an epoch's last batch is short; then epoch 2
        assert x.dtype.name == "uint8" and y.dtype.name == "int32"  # normalized in the step
        assert x.shape[1:] == (28, 28, 1) and y.shape == x.shape[:1]
        assert b.prepare(x).dtype.name == "float32"
        sizes.append(int(x.shape[0]))
    assert sizes == [48] * 5 + [16, 48]
    assert [int(x.shape[0]) for x, _ in b.test] == [64]  # evaluation batches are larger
    assert b.train_stream(0).element_spec[0].shape.as_list() == [None, 28, 28, 1]


@pytest.mark.parametrize("mode", ["unit", "none", "standardize"])
def test_normalize_modes(mode):
    from dlintro.data import build

    params = {"channels": 3, "num_train": 200}
    b = build(_cfg(normalize=mode, params=params), seed=0)
    x, _ = train_epoch(b)
    assert b.normalization["mode"] == mode and len(b.normalization["mean"]) == 3
    if mode == "unit":
        assert x.min() >= 0 and 0.8 < x.max() <= 1
    elif mode == "none":
        assert x.min() >= 0 and 200 < x.max() <= 255
        np.testing.assert_array_equal(x, np.rint(x))
    else:
        np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-3)
        raw = sources.load_dataset("synthetic", Path("/x"), params)[1].x_train / 255.0
        np.testing.assert_allclose(b.normalization["mean"], raw.mean(axis=(0, 1, 2)), rtol=1e-9)
        np.testing.assert_allclose(b.normalization["std"], raw.std(axis=(0, 1, 2)), rtol=1e-9)


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 18])
def test_histograms_count_every_pixel_across_chunks(monkeypatch, chunk):
    """Chunked counting (the start-up fix) gives np.bincount's counts of the whole array, per
    channel, whatever the chunk boundaries, and the standardize record follows from them."""
    from dlintro.data import normalization

    monkeypatch.setattr(normalization, "HISTOGRAM_CHUNK", chunk)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(37, 5, 6, 3), dtype=np.uint8)
    x[..., 2] = np.minimum(x[..., 2], 9)  # a channel with most values absent
    counts = normalization.histograms(x)
    assert counts.shape == (3, 256) and counts.dtype == np.int64
    for c in range(3):
        np.testing.assert_array_equal(counts[c], np.bincount(x[..., c].ravel(), minlength=256))
    assert counts[2, 10:].sum() == 0 and counts.sum() == x.size
    record = normalization.compute("standardize", x)
    np.testing.assert_allclose(record["mean"], (x / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(record["std"], (x / 255.0).std(axis=(0, 1, 2)), rtol=1e-9)


def test_validation_split_is_deterministic_and_disjoint():
    from dlintro.data import build
    from dlintro.data.pipeline import split_indices

    b = build(_cfg(validation_split=0.25), seed=7)
    assert (b.num_train, b.num_validation, b.steps_per_epoch) == (192, 64, 4)
    xt = train_epoch(b)[0]
    xv = _epoch(b.validation)[0]
    assert len(xt) == 192 and len(xv) == 64
    all_x = sources.load_dataset("synthetic", Path("/x"))[1].x_train
    keys = lambda a: {row.tobytes() for row in a}  # noqa: E731
    assert keys(_as_uint8(xt)).isdisjoint(keys(_as_uint8(xv)))
    assert keys(_as_uint8(xt)) | keys(_as_uint8(xv)) == keys(all_x)
    xv2 = _epoch(build(_cfg(validation_split=0.25), seed=7).validation)[0]
    np.testing.assert_array_equal(xv, xv2)  # same seed, same split, never shuffled
    tr, va = split_indices(256, 0.25, seed=7)
    assert len(tr) == 192 and len(va) == 64 and not set(tr) & set(va)
    assert not np.array_equal(va, split_indices(256, 0.25, seed=8)[1])
    with pytest.raises(UserError, match="empty validation set"):
        split_indices(256, 0.001, seed=0)
    with pytest.raises(UserError, match=r"in \[0, 1\)"):
        split_indices(256, 1.0, seed=0)


def test_shuffle_order_follows_the_seed():
    from dlintro.data import build

    first = build(_cfg(), seed=1)
    y1 = train_epoch(first)[1]
    y1_again = train_epoch(build(_cfg(), seed=1))[1]
    np.testing.assert_array_equal(y1, y1_again)
    assert not np.array_equal(y1, train_epoch(build(_cfg(), seed=2))[1])
    assert not np.array_equal(y1, train_epoch(first, 1)[1])  # reshuffled each epoch
    assert sorted(y1.tolist()) == sorted(train_epoch(first, 1)[1].tolist())


def test_test_set_is_in_file_order():
    from dlintro.data import build

    b = build(_cfg(batch_size=10), seed=3)
    x, y = _epoch(b.test)
    arrays = sources.load_dataset("synthetic", Path("/x"))[1]
    np.testing.assert_array_equal(y, arrays.y_test)
    np.testing.assert_array_equal(_as_uint8(x), arrays.x_test)


AUG = [
    NS(name="random_rotation", params={"degrees": 15}),
    NS(name="random_crop", params={"padding": 2}),
    NS(name="random_flip", params={}),
    NS(name="random_zoom", params={"factor": 0.1}),
    NS(name="random_translation", params={"height_factor": 0.1, "width_factor": 0.05}),
]


def test_augmentation_is_seeded_and_train_only():
    from dlintro.data import build

    plain = build(_cfg(validation_split=0.25), seed=5)
    aug = build(_cfg(validation_split=0.25, augment=AUG), seed=5)
    x_plain, y_plain = train_epoch(plain)
    x_aug, y_aug = train_epoch(aug)
    np.testing.assert_array_equal(y_plain, y_aug)  # same shuffle, other pixels
    assert np.abs(x_plain - x_aug).mean() > 0.01
    assert x_aug.min() >= 0 and x_aug.max() <= 1
    x_again = train_epoch(build(_cfg(validation_split=0.25, augment=AUG), seed=5))[0]
    np.testing.assert_array_equal(x_aug, x_again)
    assert not np.array_equal(x_aug, train_epoch(aug, 1)[0])  # new draws each epoch
    other = train_epoch(build(_cfg(validation_split=0.25, augment=AUG), seed=6))[0]
    assert not np.array_equal(np.sort(x_aug.ravel()), np.sort(other.ravel()))
    for split in ("validation", "test"):
        np.testing.assert_array_equal(
            _epoch(getattr(plain, split))[0], _epoch(getattr(aug, split))[0]
        )


def test_eval_batch_size_is_larger_but_bounded_in_pixels():
    from dlintro.data.pipeline import eval_batch_size

    assert eval_batch_size(128, (28, 28, 1)) == 1024
    assert eval_batch_size(32, (32, 32, 3)) == 1024
    assert eval_batch_size(8, (224, 224, 3)) == 20  # 1024 * 32 * 32 pixels // 224**2
    assert eval_batch_size(256, (224, 224, 3)) == 256  # never below the training batch
    assert eval_batch_size(2048, (28, 28, 1)) == 2048


def test_train_stream_is_raw_and_the_step_normalizes():
    """The training stream carries uint8 (float32 on 0..255 when augmented) or indices;
    `prepare`, which the compiled step runs, gathers and normalizes as evaluation does."""
    from dlintro.data import build

    params = {"channels": 3, "num_train": 200}
    b = build(_cfg(normalize="standardize", params=params), seed=0)
    stream = iter(b.train_stream(0))
    batches = [next(stream) for _ in range(b.steps_per_epoch + 1)]
    assert [int(x.shape[0]) for x, _ in batches] == [48, 48, 48, 48, 8, 48]
    assert all(x.dtype.name == "uint8" and y.dtype.name == "int32" for x, y in batches)
    x_train = sources.load_dataset("synthetic", Path("/x"), params)[1].x_train
    epoch = np.concatenate([x.numpy() for x, _ in batches[:-1]])
    key = lambda a: sorted(row.tobytes() for row in a)  # noqa: E731
    assert key(epoch) == key(x_train)  # one epoch: every image once
    assert not np.array_equal(epoch, x_train)  # shuffled
    mean, std = np.array(b.normalization["mean"]), np.array(b.normalization["std"])
    x0 = batches[0][0].numpy()
    np.testing.assert_allclose(b.prepare(x0).numpy(), (x0 / 255.0 - mean) / std, atol=1e-5)
    # One device: the same batches as indices, gathered (and normalized) by the step.
    by_index = iter(b.train_stream(0, indices=True))
    for x, y in batches:
        i, yi = next(by_index)
        assert i.dtype.name == "int32" and i.shape.rank == 1
        np.testing.assert_array_equal(yi.numpy(), y.numpy())
        np.testing.assert_array_equal(b.prepare(i).numpy(), b.prepare(x).numpy())
    i7, _ = next(iter(b.train_stream(7, indices=True)))  # resumes at step 7 as well
    x7, _ = next(iter(b.train_stream(7)))
    np.testing.assert_array_equal(b.prepare(i7).numpy(), b.prepare(x7).numpy())
    aug = build(_cfg(normalize="standardize", params=params, augment=AUG), seed=0)
    xa, _ = next(iter(aug.train_stream(0)))
    assert xa.dtype.name == "float32" and xa.numpy().min() >= 0 and xa.numpy().max() <= 255
    assert float(aug.prepare(xa).numpy().std()) > 0.5


def test_epoch_rows_are_the_index_stream_batches():
    """One device without augmentation trains on each epoch's rows (loop.Feed): the same
    batches, in the same order, as the index stream, epoch after epoch; a short last batch
    is a [1, r] part of its own; augmented data has no rows (the stream augments)."""
    from dlintro.data import build

    b = build(_cfg(params={"num_train": 200}), seed=4)  # 200 = 4 x 48 + 8
    stream = iter(b.train_stream(0, indices=True))
    for epoch in range(3):
        parts = b.train_rows(epoch)
        assert [tuple(x.shape) for x, _ in parts] == [(4, 48), (1, 8)]
        for xs, ys in parts:
            for x, y in zip(xs, ys, strict=True):
                i, yi = next(stream)
                np.testing.assert_array_equal(x.numpy(), i.numpy())
                np.testing.assert_array_equal(y.numpy(), yi.numpy())
    assert build(_cfg(augment=AUG[:1]), seed=4).train_rows is None


def test_augmentation_ops():
    import tensorflow as tf

    from dlintro.data import AUGMENTATIONS
    from dlintro.data.augment.ops import rotate

    x = sources.load_dataset("synthetic", Path("/x"))[1].x_train[:64].astype(np.float32)
    for name, params in [
        ("random_rotation", {"degrees": 0.0}),
        ("random_zoom", {"factor": 0.0}),
        ("random_translation", {"height_factor": 0.0, "width_factor": 0.0}),
        ("random_crop", {"padding": 0}),
    ]:
        out = AUGMENTATIONS.get(name)(**params)(tf.constant(x), 3).numpy()
        np.testing.assert_allclose(out, x, atol=1e-3, err_msg=name)
    flipped = AUGMENTATIONS.get("random_flip")()(tf.constant(x), 3).numpy()
    same = [np.array_equal(f, i) for f, i in zip(flipped, x, strict=True)]
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54
    cropped = AUGMENTATIONS.get("random_crop")(padding=3)(tf.constant(x), 4).numpy()
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    windows = [
        [padded[k, i : i + 28, j : j + 28] for i in range(7) for j in range(7)] for k in range(4)
    ]
    for k in range(4):
        assert any(np.array_equal(cropped[k], w) for w in windows[k])
    quarter = rotate(tf.constant(x[:2]), math.pi / 2).numpy()
    np.testing.assert_allclose(
        quarter[:, :, :, 0], np.rot90(x[:2, :, :, 0], axes=(1, 2)), atol=1e-2
    )
    rotated = AUGMENTATIONS.get("random_rotation")(degrees=30.0)(tf.constant(x), 1).numpy()
    assert rotated.min() >= 0 and rotated.max() <= 255 and not np.allclose(rotated, x)


def test_augmentation_params_are_checked_before_loading(tmp_path):
    from dlintro.data import AUGMENTATIONS, build

    with pytest.raises(ParamsError, match="less than or equal to 180"):
        AUGMENTATIONS.check_params("random_rotation", {"degrees": 500})
    with pytest.raises(ParamsError, match="horizontal"):
        AUGMENTATIONS.check_params("random_flip", {"mode": "diagonal"})
    with pytest.raises(UnknownNameError, match="did you mean 'random_rotation'"):
        build(_cfg(augment=[NS(name="random_rotate", params={})]), seed=0)
    bad = _cfg(dataset="mnist", augment=[NS(name="random_zoom", params={"factor": 2.0})])
    match = "augmentation 'random_zoom', parameter 'factor': input should be less than or equal"
    with pytest.raises(ParamsError, match=match):  # not the missing-file error
        build(bad, seed=0, data_dir=tmp_path)


def test_build_test_reuses_saved_normalization(tmp_path):
    from dlintro.data import build_test

    norm = {"mode": "standardize", "mean": [0.5], "std": [0.25]}
    ds, info, n = build_test(_cfg(batch_size=64), norm)
    x, y = _epoch(ds)
    arrays = sources.load_dataset("synthetic", Path("/x"))[1]
    assert n == 64 and info.name == "synthetic" and y.dtype == np.int32
    np.testing.assert_allclose(x, (arrays.x_test / 255.0 - 0.5) / 0.25, atol=1e-5)
    for bad in ({"mode": "unit"}, {"mode": "unit", "mean": [0, 0], "std": [1, 1]}):
        with pytest.raises(UserError, match="normalization record"):
            build_test(_cfg(), bad)


def test_missing_mnist_offline_says_where(tmp_path):
    from dlintro.data import build

    with pytest.raises(UserError) as exc:
        build(_cfg(dataset="mnist"), seed=0, data_dir=tmp_path)
    msg = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg
    assert "DLINTRO_OFFLINE" in msg and "--data-dir" in msg
