"""Hostile image inputs (issue 18, classes 1 and 2), in image folders and among predict's
inputs: images whose header declares more pixels than the limit, FIFOs, devices and sockets
named like images. Each runs as a real `dlintro` process under a memory bound (RLIMIT_AS) and
a timeout (helpers from tests/test_hostile_inputs.py): exit 2, one line naming the file and the
limit, no traceback, nothing written; predict reports each bad input and predicts the rest."""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlintro.cli import app
from tests.test_hostile_inputs import (
    GOOD,
    NO_TF_MEMORY,
    TF_MEMORY,
    assert_refused,
    cli,
    refused_in,
    snapshot,
    train_on,
)  # fmt: skip

# --------------------------------------------------------------------------- images


def png(path: Path, width: int, height: int, idat: bytes) -> Path:
    """A grey 8-bit PNG file from its compressed image data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of width x height zeros (a few hundred KB for 400 megapixels): one row
    compressed, its bytes repeated (a full flush makes every row's bytes the same)."""
    row = bytes(width + 1)
    c = zlib.compressobj(9)
    first = c.compress(row) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(row) + c.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    final = b"\x03\x00" + struct.pack(">I", adler)  # an empty last block, then the checksum
    return png(path, width, height, first + repeat * (height - 1) + final)


def small_png(path: Path, value: int = 0, side: int = 8) -> Path:
    return png(path, side, side, zlib.compress((b"\x00" + bytes([value]) * side) * side))


def test_png_bomb_is_what_it_claims(tmp_path: Path) -> None:
    """The bomb helper makes a real PNG (checked small) whose header declares its size."""
    from dlintro.data.imagefile import header_size

    write_png_bomb(tmp_path / "b.png", 300, 200)
    from PIL import Image

    with Image.open(tmp_path / "b.png") as image:
        image.load()
        assert image.size == (300, 200) and image.getextrema() == (0, 0)
    write_png_bomb(tmp_path / "huge.png", 20000, 20000)
    assert (tmp_path / "huge.png").stat().st_size < 2_000_000
    assert header_size(tmp_path / "huge.png") == (20000, 20000)


def image_tree(tmp: Path) -> Path:
    for split in ("train", "test"):
        for i, cls in enumerate(("cat", "dog")):
            for j in range(2):
                small_png(tmp / "imgs" / split / cls / f"{j}.png", 60 * i + j)
    return tmp / "imgs"


def _image_fifo(tmp: Path) -> tuple[list, tuple]:
    root = image_tree(tmp)
    os.mkfifo(root / "train" / "dog" / "pipe.png")
    return train_on(
        tmp, "image_folder", tmp, f", params: {{path: '{root}', image_size: [8, 8]}}"
    ), (
        f"{root}/train/dog/pipe.png: is a FIFO (named pipe), not a regular file",
        "on_error: skip",
    )


def _image_device(tmp: Path) -> tuple[list, tuple]:
    root = image_tree(tmp)
    (root / "test" / "cat" / "zero.jpg").symlink_to("/dev/zero")
    return train_on(
        tmp, "image_folder", tmp, f", params: {{path: '{root}', image_size: [8, 8]}}"
    ), (f"{root}/test/cat/zero.jpg: is a character device, not a regular file",)


def _image_huge(tmp: Path) -> tuple[list, tuple]:
    root = image_tree(tmp)
    write_png_bomb(root / "train" / "cat" / "huge.png", 20000, 20000)
    return train_on(
        tmp, "image_folder", tmp, f", params: {{path: '{root}', image_size: [8, 8]}}"
    ), (
        f"{root}/train/cat/huge.png: 20000x20000 = 400,000,000 pixels, more than the limit of "
        "50,000,000 pixels ($DLINTRO_MAX_IMAGE_PIXELS",
    )


IMAGE_CASES = [_image_fifo, _image_device, _image_huge]


@pytest.mark.slow
@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda f: f.__name__.removeprefix("_image_"))
def test_image_folders(case: Callable[[Path], tuple[list, tuple]], tmp_path: Path) -> None:
    args, expected = case(tmp_path)
    refused_in(tmp_path, *args, expected=expected, memory=TF_MEMORY)


def test_screen_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """screen() names every kind of refusal and never blocks; the pixel limit is the env's."""
    import socket

    from dlintro.data.imagefile import screen

    good = small_png(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "loop.png").symlink_to("loop.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    write_png_bomb(tmp_path / "huge.png", 20000, 20000)
    assert screen(good) == ""
    assert screen(tmp_path / "pipe.png") == "is a FIFO (named pipe), not a regular file"
    assert screen(tmp_path / "zero.png") == "is a character device, not a regular file"
    assert screen(tmp_path / "sock.png") == "is a socket, not a regular file"
    assert screen(tmp_path / "loop.png").startswith("cannot read (Too many levels")
    assert screen(tmp_path / "huge.png").startswith("20000x20000 = 400,000,000 pixels")
    monkeypatch.setenv("DLINTRO_MAX_IMAGE_PIXELS", "63")
    assert "8x8 = 64 pixels, more than the limit of 63 pixels" in screen(good)
    monkeypatch.setenv("DLINTRO_MAX_IMAGE_PIXELS", "64")
    assert screen(good) == ""
    sock.close()


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    (root / "c.yaml").write_text(
        GOOD.replace("num_test: 16}", "num_test: 16, image_size: 16, channels: 3}")
    )
    result = CliRunner().invoke(
        app, ["train", str(root / "c.yaml"), "--run-dir", str(root / "run")]
    )
    assert result.exit_code == 0, result.stderr
    return root / "run"


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """28x28x1: predict's MNIST way reads the image itself (another decoding path)."""
    root = tmp_path_factory.mktemp("predict")
    (root / "c.yaml").write_text(
        GOOD.replace("num_test: 16}", "num_test: 16, image_size: 28, channels: 1}")
    )
    result = CliRunner().invoke(
        app, ["train", str(root / "c.yaml"), "--run-dir", str(root / "run")]
    )
    assert result.exit_code == 0, result.stderr
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["colour_run", "grey_run"])
def test_predict_refuses_a_huge_image(which: str, request, tmp_path: Path) -> None:
    """Refused before TensorFlow starts: within the 1 GiB that no TensorFlow process fits in."""
    run = request.getfixturevalue(which)
    write_png_bomb(tmp_path / "huge.png", 20000, 20000)
    before = snapshot(run)
    refused_in(tmp_path, "predict", run, "huge.png", memory=NO_TF_MEMORY, expected=(
        "nothing to predict: huge.png: 20000x20000 = 400,000,000 pixels, more than the limit",
        "$DLINTRO_MAX_IMAGE_PIXELS",
    ))  # fmt: skip
    assert snapshot(run) == before


@pytest.mark.slow
def test_predict_reports_a_fifo_and_predicts_the_rest(colour_run: Path, tmp_path: Path) -> None:
    small_png(tmp_path / "in" / "a.png", 10)
    os.mkfifo(tmp_path / "in" / "b.png")
    (tmp_path / "in" / "c.png").symlink_to("/dev/zero")
    before = snapshot(tmp_path)
    result = cli("predict", colour_run, "in", "--json", cwd=tmp_path, memory=TF_MEMORY, timeout=240)
    assert result.returncode == 2, result.stderr
    assert [p["file"] for p in json.loads(result.stdout)] == ["in/a.png"]
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: in/b.png: is a FIFO (named pipe), not a regular file",
        "error: in/c.png: is a character device, not a regular file",
    ], result.stderr
    assert snapshot(tmp_path) == before
    # only the FIFO: nothing to predict, one line
    result = cli("predict", colour_run, "in/b.png", cwd=tmp_path, memory=TF_MEMORY)
    assert_refused(result, "nothing to predict: in/b.png: not a regular file")


def test_prepare_screens_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: both decoding paths (plain resize and the MNIST way) refuse by the limit."""
    from dlintro.predict import prepare

    good = str(small_png(tmp_path / "good.png", 200, side=30))
    huge = tmp_path / "huge.png"
    write_png_bomb(huge, 20000, 20000)
    for shape in ((28, 28, 1), (16, 16, 3)):
        prepared = prepare([good, str(huge)], shape, "auto")
        assert prepared.files == [good]
        assert prepared.failed[0][0] == str(huge) and "400,000,000 pixels" in prepared.failed[0][1]
    monkeypatch.setenv("DLINTRO_MAX_IMAGE_PIXELS", "899")  # the 30x30 image is now too big
    prepared = prepare([good], (28, 28, 1), "yes")
    assert not prepared.files and "30x30 = 900 pixels" in prepared.failed[0][1]
