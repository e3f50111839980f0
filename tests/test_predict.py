"""`dlintro predict`: image files through the run's preprocessing, top-k, failures, MNIST way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from dlintro import config, train
from dlintro.cli import app
from dlintro.data.folders import decode_images
from dlintro.data.sources import load_dataset
from dlintro.predict import mnist_way, prepare, probabilities
from dlintro.runs import load_model, run_spec
from tests.conftest import CONFIGS


def _run_config(name: str, **params: int) -> config.Config:
    return config.load(
        data={
            "name": name,
            "seed": 1,
            "data": {
                "dataset": "synthetic",
                "params": {"num_train": 64, "num_test": 32, **params},
                "batch_size": 16,
            },
            "model": {"name": "mlp", "params": {"hidden": [16]}},
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "train": {"steps": 8, "jit_compile": False},
        }
    )


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 28x28x1 run (the MNIST way applies in auto mode)."""
    return train.run(_run_config("grey"), run_dir=tmp_path_factory.mktemp("p") / "grey").run_dir


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = _run_config("colour", image_size=16, channels=3)
    return train.run(cfg, run_dir=tmp_path_factory.mktemp("p") / "colour").run_dir


def _png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.asarray(image, np.uint8)).numpy())
    return path


def _cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _test_set(run: Path) -> np.ndarray:
    cfg = config.load(run / "config.yaml")
    return load_dataset(cfg.data.dataset, Path("."), cfg.data.params)[1].x_test


def test_pngs_of_the_test_set_predict_as_the_pipeline(grey_run: Path, tmp_path: Path) -> None:
    x = _test_set(grey_run)
    files = [_png(tmp_path / f"{i:02d}.png", img) for i, img in enumerate(x)]
    code, out, err = _cli("predict", grey_run, tmp_path, "--json", "--top-k", "1")
    assert code == 0, err
    got = json.loads(out)
    assert [g["file"] for g in got] == [str(f) for f in files]
    spec = run_spec(grey_run)
    expected = probabilities(spec, load_model(grey_run / "model.keras"), x)
    assert [g["top"][0]["class"] for g in got] == expected.argmax(axis=1).tolist()
    top = [g["top"][0]["probability"] for g in got]
    np.testing.assert_allclose(top, expected.max(axis=1), rtol=0, atol=1e-6)


def test_json_shape_and_top_k(colour_run: Path, tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.full((16, 16, 3), 90))
    code, out, err = _cli("predict", colour_run, tmp_path / "a.png", "--json", "-k", "3")
    assert code == 0, err
    (item,) = json.loads(out)
    assert set(item) == {"file", "top"} and item["file"] == str(tmp_path / "a.png")
    assert len(item["top"]) == 3
    for entry in item["top"]:
        assert set(entry) == {"class", "name", "probability"}
        assert isinstance(entry["class"], int) and entry["name"] == f"class_{entry['class']}"
    probs = [e["probability"] for e in item["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    code, out, _ = _cli("predict", colour_run, tmp_path / "a.png", "--json", "-k", "99")
    assert code == 0 and len(json.loads(out)[0]["top"]) == 10  # capped at the class count
    code, out, _ = _cli("predict", colour_run, tmp_path / "a.png")
    assert code == 0 and "a.png" in out and "class_" in out and "%" in out


def test_any_size_grey_or_colour_is_decoded_as_in_training(colour_run: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    grey = _png(tmp_path / "grey.png", rng.integers(0, 256, (40, 30, 1)))
    jpeg = tmp_path / "colour.jpg"
    jpeg.write_bytes(tf.io.encode_jpeg(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).numpy())
    files = [str(grey), str(jpeg)]
    prepared = prepare(files, (16, 16, 3), "auto")
    assert prepared.files == files and not prepared.failed and not any(prepared.mnist_way)
    expected, ok = decode_images(tuple(files), (16, 16), 3)  # the image_folder decoder
    assert ok.all() and np.array_equal(prepared.images, expected)
    code, out, err = _cli("predict", colour_run, grey, jpeg, "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 2


def test_unreadable_files_are_reported_and_the_others_predicted(grey_run: Path, tmp_path: Path):
    good = _png(tmp_path / "good.png", np.zeros((28, 28, 1)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    missing = tmp_path / "missing.jpg"
    code, out, err = _cli("predict", grey_run, broken, good, missing, "--json")
    assert code == 2
    assert [p["file"] for p in json.loads(out)] == [str(good)]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), err
    assert f"{broken}: " in lines[0] and "Invalid PNG" in lines[0] and "{{" not in lines[0]
    assert f"{missing}: no such file" in lines[1]
    assert "Traceback" not in err


def test_directories_expand_sorted_recursive(grey_run: Path, tmp_path: Path) -> None:
    img = np.zeros((28, 28, 1))
    for rel in ("b/2.png", "b/1.PNG", "a.jpeg", "c/d/e.png", ".hidden/x.png", "b/.y.png"):
        if rel.endswith("jpeg"):
            (tmp_path / rel).write_bytes(tf.io.encode_jpeg(np.zeros((8, 8, 1), np.uint8)).numpy())
        else:
            _png(tmp_path / rel, img)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    code, out, err = _cli("predict", grey_run, tmp_path, "--json")
    assert code == 0, err
    names = [str(Path(p["file"]).relative_to(tmp_path)) for p in json.loads(out)]
    assert names == ["a.jpeg", "b/1.PNG", "b/2.png", "c/d/e.png"]
    code, _, err = _cli("predict", grey_run, tmp_path / "empty")
    assert code == 2 and "empty: no image files" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--invert", "maybe"], "--invert 'maybe': valid: auto, yes, no"),
        (["--top-k", "0"], "--top-k 0: must be at least 1"),
    ],
)
def test_bad_options_are_one_line(grey_run: Path, tmp_path: Path, args, expected) -> None:
    img = _png(tmp_path / "a.png", np.zeros((28, 28, 1)))
    code, _, err = _cli("predict", grey_run, img, *args)
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_help_has_an_example_and_explains_invert() -> None:
    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: dlintro predict" in result.stdout
    assert "1-channel" in result.stdout and "28x28" in result.stdout
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Example: dlintro export" in result.stdout


def test_not_a_run_directory(tmp_path: Path) -> None:
    code, _, err = _cli("predict", tmp_path, tmp_path)
    assert code == 2 and "not a dlintro run directory" in err and err.count("\n") == 1


def _dark_digit_photo(height: int = 120, width: int = 90) -> np.ndarray:
    """A grey-paper photo with a dark, off-centre, slanted stroke (a '7'-like shape)."""
    rng = np.random.default_rng(3)
    photo = np.full((height, width), 205.0) + rng.normal(0, 4, (height, width))
    photo[20:26, 50:80] = 40  # the bar
    for r in range(26, 80):  # the slanted stem
        c = 78 - (r - 26) // 2
        photo[r, c - 3 : c + 3] = 40
    return np.clip(photo, 0, 255).round().astype(np.uint8)[..., None]


def test_the_mnist_way_on_a_dark_on_light_digit(grey_run: Path, tmp_path: Path) -> None:
    path = str(_png(tmp_path / "photo.png", _dark_digit_photo()))
    prepared = prepare([path], (28, 28, 1), "auto")
    assert prepared.mnist_way == [True]
    frame = prepared.images[0, ..., 0].astype(np.float64)
    assert frame.max() == 255 and frame[0].max() == 0 and frame[:, 0].max() == 0  # light on black
    rows, cols = np.flatnonzero(frame.max(1) > 0), np.flatnonzero(frame.max(0) > 0)
    longer = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    assert 19 <= longer <= 21  # the box: longer side 20 px
    ys, xs = np.indices(frame.shape)
    assert abs((ys * frame).sum() / frame.sum() - 13.5) < 1  # centred by mass
    assert abs((xs * frame).sum() / frame.sum() - 13.5) < 1
    assert np.array_equal(prepared.images[0, ..., 0], mnist_way(_dark_digit_photo()[..., 0]))
    # --invert no: a plain resize (bright paper); other runs: only with --invert yes
    assert prepare([path], (28, 28, 1), "no").images[0].mean() > 150
    assert prepare([path], (16, 16, 3), "auto").mnist_way == [False]
    coloured = prepare([path], (16, 16, 3), "yes")
    assert coloured.mnist_way == [True] and coloured.images.shape == (1, 16, 16, 3)
    code, out, err = _cli("predict", grey_run, path)
    assert code == 0, err
    assert "1 image(s) inverted and centred the MNIST way" in out
    code, out, err = _cli("predict", grey_run, path, "--invert", "no")
    assert code == 0 and "MNIST way" not in out


def test_the_mnist_way_keeps_a_light_on_dark_image_untouched(tmp_path: Path) -> None:
    image = np.zeros((28, 28, 1), np.uint8)
    image[5:20, 3:9] = 255  # off-centre on purpose: auto must not move it
    path = str(_png(tmp_path / "digit.png", image))
    prepared = prepare([path], (28, 28, 1), "auto")
    assert prepared.mnist_way == [False] and np.array_equal(prepared.images[0], image)
    assert not mnist_way(np.full((30, 30), 200, np.uint8)).any()  # blank paper: no digit


# ----------------------------------------------------------------------------- real MNIST


def _write_mnist(mnist_dir: Path, folder: Path, start: int, n: int, photo: bool) -> list[int]:
    _, arrays = load_dataset("mnist", mnist_dir)
    rng = np.random.default_rng(0)
    labels = []
    for i in range(start, start + n):
        digit = arrays.x_test[i]
        if photo:  # dark ink, 4x larger, off-centre on grey paper, as a colour JPEG
            big = tf.image.resize(digit.astype(np.float32), (112, 112), antialias=True)
            paper = np.full((240, 180), 215.0) + rng.normal(0, 6, (240, 180))
            y, x = rng.integers(8, 240 - 120), rng.integers(8, 180 - 120)
            paper[y : y + 112, x : x + 112] -= big.numpy()[..., 0] * 0.75
            rgb = np.repeat(np.clip(paper, 0, 255)[..., None], 3, axis=-1).round().astype(np.uint8)
            (folder / f"{i:05d}.jpg").write_bytes(tf.io.encode_jpeg(rgb, quality=90).numpy())
        else:
            _png(folder / f"{i:05d}.png", digit)
        labels.append(int(arrays.y_test[i]))
    return labels


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SHARED_DATASETS

    if not (SHARED_DATASETS / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_DATASETS}/mnist")
    cfg = config.load(
        CONFIGS / "mnist_softmax.yaml", ["train.steps=300", "train.jit_compile=false"]
    )
    run = tmp_path_factory.mktemp("mnist") / "softmax"
    return train.run(cfg, run_dir=run, data_dir=SHARED_DATASETS).run_dir


def test_predict_on_mnist_pngs_agrees_with_eval(mnist_run: Path, mnist_dir: Path, tmp_path):
    """Done means: PNGs written from the real test set predict exactly as `dlintro eval` does."""
    labels = _write_mnist(mnist_dir, tmp_path, 0, 200, photo=False)
    code, out, err = _cli("predict", mnist_run, tmp_path, "--json", "-k", "1")
    assert code == 0, err
    predicted = [p["top"][0]["class"] for p in json.loads(out)]
    _, arrays = load_dataset("mnist", mnist_dir)
    spec = run_spec(mnist_run)
    probs = probabilities(spec, load_model(mnist_run / "model.keras"), arrays.x_test[:200])
    assert predicted == probs.argmax(axis=1).tolist()  # image by image
    accuracy = np.mean(np.asarray(predicted) == labels)
    assert accuracy == np.mean(probs.argmax(axis=1) == labels) > 0.85


def test_photographed_digits_get_sensible_predictions(mnist_run: Path, mnist_dir: Path, tmp_path):
    """Digits photographed dark on paper: the MNIST way recovers most of them (softmax
    regression, 300 steps: about 90% on the test set; it is the least robust of the models)."""
    labels = _write_mnist(mnist_dir, tmp_path, 300, 60, photo=True)
    code, out, err = _cli("predict", mnist_run, tmp_path, "--json", "-k", "1")
    assert code == 0, err
    got = [p["top"][0]["class"] for p in json.loads(out)]
    assert np.mean(np.asarray(got) == labels) >= 0.7
    code, out, _ = _cli("predict", mnist_run, tmp_path, "--json", "-k", "1", "--invert", "no")
    plain = [p["top"][0]["class"] for p in json.loads(out)]
    assert np.mean(np.asarray(plain) == labels) < 0.5  # without the MNIST way they fail


# ----------------------------------------------------------------------------- --csv


def test_csv_holds_what_json_says(colour_run: Path, tmp_path: Path) -> None:
    import csv

    x = _test_set(colour_run)[:5]
    for i, img in enumerate(x):
        _png(tmp_path / "in" / f"{i}.png", img)
    target = tmp_path / "out.csv"
    code, out, err = _cli("predict", colour_run, tmp_path / "in", "--json", "--csv", target)
    assert code == 0, err
    got = json.loads(out)  # stdout stays pure JSON; the note goes to stderr
    assert f"wrote {target} (5 row(s))" in err
    with target.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "class", "name", "confidence"] + [
        f"top{i}_{c}" for i in (2, 3) for c in ("class", "name", "probability")
    ]
    assert len(rows) == 6
    for row, p in zip(rows[1:], got, strict=True):
        assert row[0] == p["file"]
        assert [int(row[1]), int(row[4]), int(row[7])] == [t["class"] for t in p["top"]]
        assert [row[2], row[5], row[8]] == [t["name"] for t in p["top"]]
        probs = [float(row[3]), float(row[6]), float(row[9])]
        np.testing.assert_allclose(probs, [t["probability"] for t in p["top"]], rtol=1e-5)
    code, out, err = _cli("predict", colour_run, tmp_path / "in", "-k", "1", "--csv", target)
    assert code == 0 and f"wrote {target} (5 row(s))" in out
    assert target.read_text().splitlines()[0] == "file,class,name,confidence"  # replaced


def test_csv_target_is_checked_before_predicting(grey_run: Path, tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", np.zeros((28, 28, 1)))
    for target, why in ((tmp_path / "nope" / "x.csv", "does not exist"),
                        (tmp_path, "is a directory")):  # fmt: skip
        code, out, err = _cli("predict", grey_run, image, "--csv", target)
        assert code == 2 and why in err and err.count("\n") == 1 and not out, err
    assert not (tmp_path / "nope").exists()


# ----------------------------------------------------------------------------- preprocess.py


def _standalone_preprocess(run: Path, tmp_path: Path) -> dict:
    """The export JSON's `preprocess` code, run in a namespace of its own (no dlintro)."""
    code, _, err = _cli("export", run, "--format", "keras", "--out", tmp_path / "m.keras")
    assert code == 0, err
    record = json.loads((tmp_path / "m.keras.json").read_text())["preprocess"]
    assert not re.search(r"^\s*(import|from)\s+dlintro", record["code"], re.MULTILINE)
    namespace: dict = {"__name__": "standalone"}
    exec(compile(record["code"], "preprocess.py", "exec"), namespace)
    return {"record": record, "preprocess": namespace["preprocess"]}


def test_the_preprocess_snippet_does_what_predict_does(colour_run, grey_run, tmp_path) -> None:
    """Images of other sizes, grey or colour, PNG or JPEG: within a few levels of predict's own
    decoding and resizing; the same size and format: exactly."""
    snippet = _standalone_preprocess(colour_run, tmp_path)
    assert "resize it to 16x16 with antialiased bilinear" in snippet["record"]["left_to_caller"]
    assert snippet["record"]["usage"] == "x = np.stack([preprocess(p, 16, 16, 3) for p in paths])"
    preprocess = snippet["preprocess"]
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.integers(0, 256, (6, 5, 3)).astype(np.float32), (40, 30))
    photo = np.clip(smooth.numpy(), 0, 255).round().astype(np.uint8)
    same = _png(tmp_path / "same.png", photo[:16, :16])
    files = [same, _png(tmp_path / "big.png", photo), _png(tmp_path / "grey.png", photo[..., :1])]
    jpeg = tmp_path / "big.jpg"
    jpeg.write_bytes(tf.io.encode_jpeg(photo, quality=95).numpy())
    files.append(jpeg)
    ours = prepare([str(f) for f in files], (16, 16, 3), "auto").images
    theirs = np.stack([preprocess(f, 16, 16, 3) for f in files])
    assert theirs.dtype == np.uint8 and theirs.shape == ours.shape
    assert np.array_equal(theirs[0], ours[0])
    diff = np.abs(theirs.astype(int) - ours.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.5, (diff.max(), diff.mean())
    digit = str(_png(tmp_path / "digit.png", _dark_digit_photo()))
    grey = _standalone_preprocess(grey_run, tmp_path / "g")["preprocess"]
    frame, expected = grey(digit, 28, 28, 1), prepare([digit], (28, 28, 1)).images[0]
    assert frame.shape == (28, 28, 1) and frame.max() == 255 and frame[0].max() == 0
    assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 3
    assert grey(digit, 28, 28, 1, invert="no").mean() > 150  # plain resize: bright paper


@pytest.mark.slow
def test_photographed_digits_through_the_snippet_and_inference_keras(
    mnist_run: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    """Outside dlintro (the snippet, then inference.keras) photographed digits are classified as
    `dlintro predict` classifies them; without the MNIST way they fail."""
    import keras

    (tmp_path / "g").mkdir()
    preprocess = _standalone_preprocess(mnist_run, tmp_path / "g")["preprocess"]
    labels = _write_mnist(mnist_dir, tmp_path, 300, 60, photo=True)
    files = sorted(tmp_path.glob("*.jpg"))
    model = keras.saving.load_model(mnist_run / "inference.keras")
    outside = model.predict(np.stack([preprocess(f, 28, 28, 1) for f in files]), verbose=0)
    code, out, err = _cli("predict", mnist_run, *files, "--json", "-k", "1")
    assert code == 0, err
    inside = [p["top"][0]["class"] for p in json.loads(out)]
    assert np.mean(outside.argmax(axis=1) == inside) >= 0.9
    assert np.mean(outside.argmax(axis=1) == labels) >= 0.7
    plain = np.stack([preprocess(f, 28, 28, 1, invert="no") for f in files])
    assert np.mean(model.predict(plain, verbose=0).argmax(axis=1) == labels) < 0.5
