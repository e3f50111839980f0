"""Hostile input: each kind ends with one line naming what is wrong, exit code 2, no traceback,
and every file on disk exactly as it was."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import pytest
from typer.testing import CliRunner

from dlintro.cli import app

GOOD = """\
name: tiny
data: {dataset: synthetic, params: {num_train: 64, num_test: 16}, batch_size: 16}
model: {name: mlp, params: {hidden: [8]}}
train: {steps: 2}
"""


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    (root / "c.yaml").write_text(GOOD)
    code, err = _run("train", root / "c.yaml", "--run-dir", root / "run")
    assert code == 0, err
    return root / "run"


def _case_yaml(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text("name: t\nmodel: {name: mlp\n")
    return ["train", tmp / "c.yaml", "--run-dir", tmp / "run"], "c.yaml:3:1: YAML syntax error"


def _case_unsafe_yaml(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    return ["train", tmp / "c.yaml"], "c.yaml:1:7: YAML syntax error"


def _case_unknown_key(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text(GOOD.replace("train:", "trian:"))
    return ["train", tmp / "c.yaml"], "c.yaml:4: unknown key 'trian' (did you mean 'train'?)"


def _case_range(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text(GOOD.replace("batch_size: 16", "batch_size: 0"))
    return ["train", tmp / "c.yaml"], "data.batch_size = 0: input should be greater than or equal"


def _case_type(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text(GOOD.replace("steps: 2", "steps: two"))
    return ["train", tmp / "c.yaml"], "train.steps = 'two': input should be a valid integer"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("model.name", "lenett5", "unknown model 'lenett5' (did you mean 'lenet5'?)"),
        ("data.dataset", "mnsit", "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        ("optimizer.name", "adamm", "unknown optimizer 'adamm' (did you mean 'adam'?)"),
        ("schedule.name", "cosin", "unknown schedule 'cosin' (did you mean 'cosine'?)"),
    ],
)
def test_unknown_names(tmp_path: Path, key: str, value: str, expected: str) -> None:
    (tmp_path / "c.yaml").write_text(GOOD)
    before = _snapshot(tmp_path)
    code, err = _run("train", tmp_path / "c.yaml", "--set", f"{key}={value}")
    assert code == 2
    assert expected in err and "valid:" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _snapshot(tmp_path) == before


def _mnist_copy(tmp: Path, damage: Callable[[Path], None]) -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    if not shared.is_dir():
        pytest.skip(f"real MNIST not found at {shared}")
    data = tmp / "data"
    shutil.copytree(shared, data / "mnist")
    damage(data / "mnist")
    return data


def _train_mnist(tmp: Path, data: Path) -> list:
    """`dlintro train` arguments for one softmax step on the MNIST files under `data`."""
    (tmp / "c.yaml").write_text(
        "name: t\ndata: {dataset: mnist}\nmodel: {name: softmax}\ntrain: {steps: 1}\n"
    )
    return ["train", tmp / "c.yaml", "--data-dir", data, "--run-dir", tmp / "run"]


def _case_truncated_data(tmp: Path) -> tuple[list, str]:
    def cut(d: Path) -> None:
        f = d / "t10k-labels-idx1-ubyte.gz"
        f.write_bytes(f.read_bytes()[:1000])

    return (
        _train_mnist(tmp, _mnist_copy(tmp, cut)),
        "t10k-labels-idx1-ubyte.gz: size 1000 bytes, expected 4542",
    )


def _case_corrupt_data(tmp: Path) -> tuple[list, str]:
    def corrupt(d: Path) -> None:  # same size, wrong content: a valid gzip of a bad header
        f = d / "t10k-labels-idx1-ubyte.gz"
        size = f.stat().st_size
        bad = gzip.compress(b"\x00\x00\x09\x01" + b"\x00" * 12, mtime=0)
        f.write_bytes(bad + b"\x00" * (size - len(bad)))

    return _train_mnist(tmp, _mnist_copy(tmp, corrupt)), "t10k-labels-idx1-ubyte.gz"


def _case_checksum(tmp: Path) -> tuple[list, str]:
    def flip(d: Path) -> None:
        f = d / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(f.read_bytes())
        raw[-20] ^= 0xFF
        f.write_bytes(bytes(raw))

    data = _mnist_copy(tmp, flip)
    return (["datasets", "--verify", "--data-dir", data], "t10k-labels-idx1-ubyte.gz")


def _case_missing_data(tmp: Path) -> tuple[list, str]:
    (tmp / "empty").mkdir()
    return _train_mnist(tmp, tmp / "empty"), "train-images-idx3-ubyte.gz"


def _case_bad_image(tmp: Path) -> tuple[list, str]:
    import numpy as np
    import tensorflow as tf

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = tmp / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                img = np.full((8, 8, 3), 40 * i, np.uint8)
                (d / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    (tmp / "imgs" / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (tmp / "c.yaml").write_text(
        f"name: t\ndata: {{dataset: image_folder, params: {{path: '{tmp / 'imgs'}', "
        "image_size: [8, 8]}, batch_size: 2}\nmodel: {name: mlp, params: {hidden: [4]}}\n"
        "train: {steps: 1}\n"
    )
    return (["train", tmp / "c.yaml", "--run-dir", tmp / "run"], "broken.png")


def _case_not_a_run(tmp: Path) -> tuple[list, str]:
    (tmp / "somedir").mkdir()
    (tmp / "somedir" / "notes.txt").write_text("hello")
    return (["eval", tmp / "somedir"], "not a dlintro run directory (missing config.yaml")


def _case_unwritable_output(tmp: Path) -> tuple[list, str]:
    (tmp / "c.yaml").write_text(GOOD)
    (tmp / "afile").write_text("a file, not a directory")
    return (
        ["train", tmp / "c.yaml", "--run-dir", tmp / "afile" / "run"],
        "cannot create the run directory",
    )


@pytest.mark.parametrize(
    "case",
    [
        _case_yaml,
        _case_unsafe_yaml,
        _case_unknown_key,
        _case_range,
        _case_type,
        _case_truncated_data,
        _case_corrupt_data,
        _case_missing_data,
        _case_bad_image,
        _case_not_a_run,
        _case_unwritable_output,
    ],
    ids=lambda f: f.__name__.removeprefix("_case_"),
)
def test_hostile_input(case: Callable[[Path], tuple[list, str]], tmp_path: Path) -> None:
    args, expected = case(tmp_path)
    before = _snapshot(tmp_path)
    code, err = _run(*args)
    assert code == 2, err
    assert expected in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "run").exists()
    assert not Path("pwned").exists()


def test_verify_reports_a_bad_checksum_with_exit_1(tmp_path: Path) -> None:
    """`datasets --verify` is a check, not a refused input: a failed check exits 1."""
    args, expected = _case_checksum(tmp_path)
    before = _snapshot(tmp_path)
    code, err = _run(*args)
    out = CliRunner().invoke(app, args).output
    assert code == 1, err
    assert expected in err + out
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before


def _replace_model(run: Path, tmp: Path, model_bytes: bytes | None, model: keras.Model | None):
    copy = tmp / "run"
    shutil.copytree(run, copy)
    if model is not None:
        (copy / "model.keras").unlink()
        model.save(copy / "model.keras")
    else:
        (copy / "model.keras").write_bytes(model_bytes or b"")
    return copy


def test_a_model_file_that_is_not_a_keras_model(finished_run: Path, tmp_path: Path) -> None:
    run = _replace_model(finished_run, tmp_path, b"PK\x03\x04 definitely not a model", None)
    before = _snapshot(tmp_path)
    code, err = _run("eval", run)
    assert code == 2
    assert f"{run / 'model.keras'}: not a loadable Keras model" in err
    assert err.count("\n") == 1
    assert _snapshot(tmp_path) == before


def test_a_model_file_that_asks_to_run_code(finished_run: Path, tmp_path: Path) -> None:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)  # arbitrary Python code in the file
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    run = _replace_model(finished_run, tmp_path, None, keras.Model(inputs, outputs))
    before = _snapshot(tmp_path)
    code, err = _run("eval", run)
    assert code == 2
    assert "not a loadable Keras model" in err and "safe_mode" in err
    assert _snapshot(tmp_path) == before


def test_eval_of_a_run_without_a_final_model(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    (copy / "model.keras").unlink()
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps(meta | {"status": "interrupted"}))
    before = _snapshot(tmp_path)
    code, err = _run("eval", copy)
    assert code == 2
    assert "the run has no final model (status: interrupted)" in err
    assert _snapshot(tmp_path) == before
