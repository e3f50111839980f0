"""image_folder: listing, decoding (PNG/JPEG, grey/colour, any size), errors, splits, real data."""

import os
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from dlintro.data import folders, sources
from dlintro.errors import UserError
from dlintro.registry import ParamsError
from tests.conftest import train_epoch

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10_jpeg"
ROOT = Path("/nonexistent-data-root")  # image_folder does not use the data directory


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 [H,W,C] array as PNG or JPEG (by suffix) with TensorFlow's encoders."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        data = tf.io.encode_png(image)
    else:
        data = tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False)
    path.write_bytes(data.numpy())
    return path


def solid(h, w, colour):
    return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, len(colour))).copy()


def load(path, **params):
    return sources.load_dataset("image_folder", ROOT, {"path": str(path), **params})


@pytest.fixture
def small_tree(tmp_path):
    """train/{cat,dog}, test/{cat,dog}: colour and grey PNGs and a JPEG, of different sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    exact = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_image(root / "train" / "cat" / "a.png", exact)
    write_image(root / "train" / "cat" / "b.png", solid(40, 24, (200, 100, 50)))
    write_image(root / "train" / "cat" / "sub" / "c.JPG", solid(32, 32, (10, 220, 90)))
    write_image(root / "train" / "dog" / "d.png", solid(16, 16, (77,)))  # grey
    write_image(root / "train" / "dog" / "e.jpeg", solid(64, 48, (128,)))  # grey JPEG
    write_image(root / "test" / "cat" / "f.png", solid(32, 32, (1, 2, 3)))
    write_image(root / "test" / "dog" / "g.png", solid(8, 8, (250,)))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")  # ignored
    (root / "train" / "dog" / ".hidden.png").write_bytes(b"ignored")  # ignored
    return root, exact


def test_layout_classes_shapes_and_pixels(small_tree):
    root, exact = small_tree
    info, a = load(root)
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert info.input_shape == (32, 32, 3) and info.files == () and info.skipped == ()
    assert a.x_train.shape == (5, 32, 32, 3) and a.x_test.shape == (2, 32, 32, 3)
    assert a.x_train.dtype == a.y_train.dtype == np.uint8
    assert a.y_train.tolist() == [0, 0, 0, 1, 1] and a.y_test.tolist() == [0, 1]
    np.testing.assert_array_equal(a.x_train[0], exact)  # same size: not resampled
    np.testing.assert_array_equal(a.x_train[1], solid(32, 32, (200, 100, 50)))  # resized
    assert np.abs(a.x_train[2].astype(int) - (10, 220, 90)).max() <= 3  # JPEG, recursive
    np.testing.assert_array_equal(a.x_train[3], solid(32, 32, (77, 77, 77)))  # grey -> RGB
    assert np.abs(a.x_train[4].astype(int) - 128).max() <= 2
    np.testing.assert_array_equal(a.x_test[1], solid(32, 32, (250, 250, 250)))
    assert not a.x_train.flags.writeable
    assert load(root)[1].x_train is a.x_train  # decoded once per process


def test_channels_and_image_size(small_tree):
    root, _ = small_tree
    info, a = load(root, image_size=(20, 10), channels=1)
    assert info.input_shape == (20, 10, 1) and a.x_train.shape == (5, 20, 10, 1)
    assert int(a.x_train[3, 0, 0, 0]) == 77
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # colour -> grey
    assert abs(int(a.x_train[1, 5, 5, 0]) - luma) <= 2
    _, b = load(root, image_size=[16, 16])  # a list works as well as a tuple
    assert b.x_train.shape == (5, 16, 16, 3)
    with pytest.raises(ParamsError, match=r"'image_size.*greater than or equal to 1"):
        load(root, image_size=(0, 32))
    with pytest.raises(ParamsError, match="'channels': input should be 1 or 3"):
        load(root, channels=2)
    with pytest.raises(ParamsError, match="'on_error': input should be 'fail' or 'skip'"):
        load(root, on_error="ignore")


def test_info_without_decoding(small_tree, monkeypatch):
    root, _ = small_tree
    monkeypatch.setattr(folders, "decode_images", lambda *a: pytest.fail("decoded"))
    info = sources.dataset_info("image_folder", {"path": str(root), "image_size": (64, 64)})
    assert info.input_shape == (64, 64, 3) and info.class_names == ("cat", "dog")
    assert (info.num_train, info.num_test) == (5, 2)
    placeholder = sources.dataset_info("image_folder")
    assert placeholder.files == () and "path" in placeholder.description


def test_relative_path_starts_at_the_current_directory(small_tree, monkeypatch):
    root, _ = small_tree
    monkeypatch.chdir(root.parent)
    assert load("pets")[0].num_train == 5
    with pytest.raises(UserError) as exc:
        load("no-such-folder")
    msg = str(exc.value)
    assert "image_folder: path 'no-such-folder'" in msg and str(root.parent) in msg


@pytest.mark.parametrize("kind", ["garbage", "truncated_jpeg", "empty"])
def test_corrupt_image_is_named_or_skipped(small_tree, kind):
    root, _ = small_tree
    bad = root / "train" / "dog" / ("zz.jpg" if kind == "truncated_jpeg" else "zz.png")
    if kind == "garbage":
        bad.write_bytes(os.urandom(300))
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        write_image(bad, solid(32, 32, (5, 5, 5)))
        bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(UserError) as exc:
        load(root)
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: cannot decode this image (") and "on_error: skip" in msg
    assert "\n" not in msg
    info, a = load(root, on_error="skip")
    assert info.skipped == (str(bad),) and "1 unreadable file(s) skipped" in info.description
    assert info.num_train == 5 and a.x_train.shape[0] == 5
    assert a.y_train.tolist() == [0, 0, 0, 1, 1]


def test_several_bad_files_are_counted(small_tree):
    root, _ = small_tree
    for name in ("x1.png", "x2.png"):
        (root / "test" / "cat" / name).write_bytes(b"nope")
    with pytest.raises(UserError, match=r"x1.png: cannot decode .*\(1 more unreadable file"):
        load(root)
    info, a = load(root, on_error="skip")
    assert len(info.skipped) == 2 and a.x_test.shape[0] == 2


def test_class_folders_must_match(small_tree):
    root, _ = small_tree
    (root / "test" / "dog").rename(root / "test" / "wolf")
    with pytest.raises(UserError) as exc:
        load(root)
    msg = str(exc.value)
    assert msg.startswith(f"{root / 'test'}: class folders differ from {root / 'train'}")
    assert "missing: dog; extra: wolf" in msg


def test_layout_errors(tmp_path, small_tree):
    root, _ = small_tree
    with pytest.raises(UserError, match=r"split 0\.2 does not apply"):
        load(root, split=0.2)
    empty = root / "train" / "bird"
    empty.mkdir()
    (root / "test" / "bird").mkdir()
    with pytest.raises(UserError, match=f"{empty}: no images"):
        load(root)
    only_test = tmp_path / "t"
    write_image(only_test / "test" / "a" / "x.png", solid(4, 4, (1,)))
    with pytest.raises(UserError, match="has a test/ folder but no train/"):
        load(only_test)
    flat = tmp_path / "flat"
    write_image(flat / "a" / "x.png", solid(4, 4, (1,)))
    with pytest.raises(UserError, match=r"no train/ and test/ folders; set data.params.split"):
        load(flat)
    with pytest.raises(UserError, match="no class folders"):
        load(flat / "a", split=0.5)


@pytest.fixture
def flat_tree(tmp_path):
    """flat/<class>/ with 10 images per class, each image's pixels encoding (class, index)."""
    root = tmp_path / "flat"
    for c, name in enumerate(("b", "a", "c")):
        for i in range(10):
            write_image(root / name / f"{i:02d}.png", solid(8, 8, (c * 10 + i,)))
    return root


def test_split_is_seeded_stratified_and_disjoint(flat_tree):
    info, a = load(flat_tree, split=0.3, image_size=(8, 8), channels=1)
    assert info.class_names == ("a", "b", "c")
    assert a.x_train.shape[0] == 21 and a.x_test.shape[0] == 9
    assert np.bincount(a.y_test).tolist() == [3, 3, 3]
    train_ids = set(a.x_train[:, 0, 0, 0].tolist())
    test_ids = set(a.x_test[:, 0, 0, 0].tolist())
    assert not train_ids & test_ids and len(train_ids | test_ids) == 30
    listing = folders.list_folder(str(flat_tree), 0.3)
    assert listing == folders.list_folder(str(flat_tree), 0.3)  # same files, same split
    assert listing.test_files != folders.list_folder(str(flat_tree), 0.5).test_files
    # a class's split depends only on its own files: adding a class changes nothing else
    write_image(flat_tree / "d" / "00.png", solid(8, 8, (99,)))
    write_image(flat_tree / "d" / "01.png", solid(8, 8, (98,)))
    grown = folders.list_folder(str(flat_tree), 0.3)
    assert set(listing.test_files) <= set(grown.test_files)
    with pytest.raises(UserError, match="empty test set"):
        load(flat_tree, split=0.01)
    for i in range(4):  # train/ alone (no test/): its classes are split
        write_image(flat_tree / "train" / "x" / f"{i}.png", solid(8, 8, (i,)))
    assert folders.list_folder(str(flat_tree), 0.3).class_names == ("x",)


def test_standardize_per_channel_on_an_image_folder(small_tree):
    from dlintro.data import build

    root, _ = small_tree
    cfg = NS(
        dataset="image_folder", params={"path": str(root)}, batch_size=3, validation_split=0.0,
        normalize="standardize", augment=[], cache=False,
    )  # fmt: skip
    bundle = build(cfg, seed=0)
    assert bundle.info.class_names == ("cat", "dog") and bundle.num_train == 5
    assert len(bundle.normalization["mean"]) == 3
    x, _ = train_epoch(bundle)
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-3)


@pytest.mark.slow
def test_real_cifar10_jpeg():
    if not (CIFAR10_JPEG / "train" / "airplane").is_dir():
        pytest.skip(f"cifar10_jpeg not found at {CIFAR10_JPEG} (clone next to shared/)")
    start = time.perf_counter()
    info, a = load(CIFAR10_JPEG)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"decoding 60,000 JPEGs took {seconds:.0f} s"
    assert a.x_train.shape == (50000, 32, 32, 3) and a.x_test.shape == (10000, 32, 32, 3)
    assert info.class_names == (
        *("airplane", "automobile", "bird", "cat", "deer"),
        *("dog", "frog", "horse", "ship", "truck"),
    )
    assert np.bincount(a.y_train).tolist() == [5000] * 10
    assert np.bincount(a.y_test).tolist() == [1000] * 10
    mean = a.x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(mean, (125.3, 122.9, 113.9), atol=0.1)


def test_imagenet_is_described_but_not_loaded():
    info = sources.dataset_info("imagenet")
    assert info.input_shape == (224, 224, 3) and info.num_classes == 1000
    assert len(info.class_names) == 1000 and info.class_names[:2] == ("n0", "n1")
    assert info.files == ()
    with pytest.raises(UserError) as exc:
        sources.load_dataset("imagenet", ROOT)
    assert str(exc.value) == (
        "ImageNet cannot be downloaded automatically; the imagenet_* configs are reference "
        "architectures for `dlintro summary`; to train, use dataset image_folder with your copy"
    )


def test_train_and_eval_an_image_folder_end_to_end(tmp_path: Path) -> None:
    """A user's folder trains and evaluates through the CLI, with class names from the folders."""
    import json

    import tensorflow as tf
    from typer.testing import CliRunner

    from dlintro.cli import app

    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for cls, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
            folder = tmp_path / "photos" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                size = int(rng.integers(20, 40))  # any size: resized in the pipeline
                img = np.clip(rng.normal(colour, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
                (folder / f"{i}.{'png' if i % 2 else 'jpg'}").write_bytes(encode(img).numpy())
    cfg = tmp_path / "photos.yaml"
    cfg.write_text(
        "name: photos\n"
        f"data: {{dataset: image_folder, params: {{path: '{tmp_path / 'photos'}', "
        "image_size: [16, 16]}, batch_size: 8, normalize: standardize}\n"
        "model: {name: plain_convnet, params: {stages: [[8]], dense: [16]}}\n"
        "optimizer: {name: adam, learning_rate: 0.01}\ntrain: {epochs: 4}\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["class_names"] == ["blue", "red"]
    assert metrics["num_examples"] == 16
    assert metrics["accuracy"] == 1.0  # red vs blue is easy
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["data"]["input_shape"] == [16, 16, 3]
    assert len(meta["data"]["normalization"]["mean"]) == 3


# --------------------------------------------------------------------------- what skipping shows


def _pets(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (("train", per_class), ("test", per_class)):
        for cls in ("cat", "dog"):
            for i in range(n):
                image = rng.integers(0, 256, (8, 8, 3), np.uint8)
                write_image(root / split / cls / f"{i}.png", image)
    return root


def _train_cli(tmp_path: Path, root: Path, on_error: str = "skip"):
    from typer.testing import CliRunner

    from dlintro.cli import app

    cfg = tmp_path / "pets.yaml"
    cfg.write_text(
        f"name: pets\ndata: {{dataset: image_folder, params: {{path: '{root}', image_size: [8, 8], "
        f"on_error: {on_error}}}, batch_size: 4}}\nmodel: {{name: mlp, params: {{hidden: [8]}}}}\n"
        "train: {steps: 2}\n"
    )
    return CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run")])


def test_skipped_files_are_counted_named_and_recorded(tmp_path: Path) -> None:
    import json

    root = _pets(tmp_path / "pets")
    for i in range(7):
        (root / "train" / "dog" / f"zz{i}.png").write_bytes(b"not a png")
    os.mkfifo(root / "test" / "cat" / "pipe.png")  # never opened: skipped by path
    result = _train_cli(tmp_path, root)
    assert result.exit_code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("skipped "))
    assert line == (
        f"skipped 8 unreadable image(s) in {root} (on_error: skip): train/dog/zz0.png, "
        "train/dog/zz1.png, train/dog/zz2.png, train/dog/zz3.png, train/dog/zz4.png and 3 more"
    )
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["data"]["skipped"] == {
        "count": 8,
        "first": [f"train/dog/zz{i}.png" for i in range(7)] + ["test/cat/pipe.png"],
    }
    assert meta["data"]["num_train"] == 8 and meta["data"]["num_test"] == 8


def test_nothing_skipped_records_nothing(tmp_path: Path) -> None:
    import json

    result = _train_cli(tmp_path, _pets(tmp_path / "pets"))
    assert result.exit_code == 0, result.stderr
    assert "unreadable" not in result.stdout
    assert "skipped" not in json.loads((tmp_path / "run" / "meta.json").read_text())["data"]


def test_the_gallery_names_image_folder_files(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from dlintro.cli import app

    root = _pets(tmp_path / "pets", per_class=6)
    (root / "test" / "dog" / "bad.png").write_bytes(b"junk")  # skipped: the paths still match
    assert _train_cli(tmp_path, root).exit_code == 0
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    gallery = report["gallery"]
    assert gallery  # random pixels after two steps: mistakes to show
    listing = folders.list_folder(str(root))
    test_files = [os.path.relpath(f, root) for f in listing.test_files if "bad" not in f]
    for g in gallery:
        assert g["path"] == test_files[g["index"]]
        assert g["path"].startswith(f"test/{g['true_name']}/")
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert f"<figcaption>{gallery[0]['path']}: true" in html and "<figcaption>#" not in html


def test_eval_on_another_folder(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from dlintro.cli import app

    run = tmp_path / "run"
    assert _train_cli(tmp_path, _pets(tmp_path / "pets")).exit_code == 0
    metrics_before = (run / "metrics.json").read_bytes()
    rng = np.random.default_rng(2)
    more = tmp_path / "more"
    for i in range(3):  # one class only: a subset of the run's classes
        write_image(more / "dog" / f"{i}.jpg", rng.integers(0, 256, (20, 12, 3), np.uint8))
    (more / "dog" / "broken.png").write_bytes(b"junk")  # the run's on_error: skip
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(run), "--data", str(more), "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["num_examples"] == 3 and metrics["class_names"] == ["cat", "dog"]
    assert metrics["confusion_matrix"][0] == [0, 0] and sum(metrics["confusion_matrix"][1]) == 3
    assert metrics["data"] == str(more) and metrics["skipped"]["first"] == ["dog/broken.png"]
    assert metrics["report"] == str(run / "report-more" / "index.html")
    saved = json.loads((run / "report-more" / "metrics.json").read_text())
    assert saved["num_examples"] == 3 and (run / "report-more" / "index.html").is_file()
    assert (run / "metrics.json").read_bytes() == metrics_before  # the run's own stays
    # a dataset root with train/ and test/: its test split
    result = runner.invoke(app, ["eval", str(run), "--data", str(tmp_path / "pets")])
    assert result.exit_code == 0, result.stderr
    assert "(8 images)" in result.stdout and "report-pets/index.html" in result.stdout
    # a class folder the run does not know: one line, exit 2, nothing written
    write_image(more / "wolf" / "0.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
    before = sorted(p.name for p in run.iterdir())
    result = runner.invoke(app, ["eval", str(run), "--data", str(more)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {more}: class folder(s) wolf are not classes of the run (cat, dog); each "
        "class folder must be named after one of them\n"
    )
    assert sorted(p.name for p in run.iterdir()) == before
