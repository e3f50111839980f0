"""Downloads against a real HTTP server on 127.0.0.1 (never any other address)."""

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlintro.data import download, mnist, sources
from dlintro.data.idx import write_idx
from dlintro.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def use_mirror(monkeypatch, url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    monkeypatch.setenv("DLINTRO_MIRROR", url)
    monkeypatch.delenv("DLINTRO_OFFLINE")


def tiny_dataset(directory: Path, name: str = "tiny") -> sources.DatasetInfo:
    """Hand-made IDX files in directory/<name>/ and a DatasetInfo with their checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 8, dtype=np.uint8),
    }
    (directory / name).mkdir(parents=True)
    specs = []
    for fname, array in arrays.items():
        path = directory / name / fname
        write_idx(path, array)
        data = path.read_bytes()
        md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        specs.append(sources.FileSpec(fname, len(data), md5, sha))
    classes = tuple("0123456789")
    return sources.DatasetInfo(name, "tiny", (28, 28, 1), 10, classes, tuple(specs), (), 20, 8)


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_mirror_env_and_offline_flag(monkeypatch):
    info = mnist.MNIST_INFO
    monkeypatch.delenv("DLINTRO_OFFLINE")
    assert download.mirrors_for(info) == list(info.mirrors) and not download.offline()
    monkeypatch.setenv("DLINTRO_MIRROR", "http://127.0.0.1:9/data/")
    assert download.mirrors_for(info) == ["http://127.0.0.1:9/data/mnist/"]
    for value, expected in [("1", True), ("TRUE", True), ("yes", True), ("0", False)]:
        monkeypatch.setenv("DLINTRO_OFFLINE", value)
        assert download.offline() is expected


def test_downloads_real_mnist(tmp_path, serve, monkeypatch):
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"real MNIST files not found in {SHARED / 'mnist'}")
    shutil.copytree(SHARED / "mnist", tmp_path / "srv" / "mnist")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    root = tmp_path / "root"
    seen: dict[str, tuple[int, int]] = {}
    directory = download.ensure_files(
        mnist.MNIST_INFO, root, progress=lambda n, done, total: seen.__setitem__(n, (done, total))
    )
    assert directory == root / "mnist"
    assert names_in(directory) == sorted(f.name for f in mnist.MNIST_INFO.files)
    assert seen == {f.name: (f.size, f.size) for f in mnist.MNIST_INFO.files}
    assert all(r["ok"] for r in download.verify_files(mnist.MNIST_INFO, root))
    arrays = sources.load_dataset("mnist", root)[1]
    assert arrays.x_train.shape == (60000, 28, 28, 1) and int(arrays.y_train[0]) == 5


def test_downloads_into_empty_root_and_verifies(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    root = tmp_path / "deep" / "root"
    assert download.ensure_files(info, root) == root / "tiny"
    for spec in info.files:
        served = (tmp_path / "srv" / "tiny" / spec.name).read_bytes()
        assert (root / "tiny" / spec.name).read_bytes() == served
    assert names_in(root / "tiny") == sorted(f.name for f in info.files)  # no temp files left
    rows = download.verify_files(info, root)
    assert [r["sha256"] for r in rows] == [f.sha256 for f in info.files]
    arrays = mnist.load_idx_dataset(info, root)
    assert arrays.x_train.shape == (20, 28, 28, 1) and arrays.y_test.shape == (8,)
    # present files are not fetched again, even when the server is gone
    shutil.rmtree(tmp_path / "srv" / "tiny")
    assert download.ensure_files(info, root) == root / "tiny"


def test_checksum_mismatch_names_file_and_both_sums(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    bad = tmp_path / "srv" / "tiny" / "train-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    bad.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    root = tmp_path / "root"
    with pytest.raises(UserError) as exc:
        download.ensure_files(info, root)
    msg = str(exc.value)
    assert "checksum mismatch for train-labels-idx1-ubyte.gz" in msg
    assert f"expected sha256 {info.files[1].sha256}, got {actual}" in msg
    assert str(root / "tiny") in msg and "\n" not in msg
    assert names_in(root / "tiny") == ["train-images-idx3-ubyte.gz"]  # nothing partial


def test_next_mirror_after_bad_one(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "good")
    shutil.copytree(tmp_path / "good", tmp_path / "bad")
    for f in (tmp_path / "bad" / "tiny").iterdir():
        f.write_bytes(b"x" * f.stat().st_size)
    mirrors = (serve(tmp_path / "bad") + "/tiny/", serve(tmp_path / "good") + "/tiny")
    info = dataclasses.replace(info, mirrors=mirrors)
    monkeypatch.delenv("DLINTRO_OFFLINE")
    download.ensure_files(info, tmp_path / "root")
    assert all(r["ok"] for r in download.verify_files(info, tmp_path / "root"))


def test_unreachable_file_names_files_directory_and_reason(tmp_path, serve, monkeypatch):
    (tmp_path / "empty").mkdir()
    use_mirror(monkeypatch, serve(tmp_path / "empty"))
    with pytest.raises(UserError) as exc:
        download.ensure_files(mnist.MNIST_INFO, tmp_path / "root")
    msg = str(exc.value)
    assert "cannot download train-images-idx3-ubyte.gz" in msg and "HTTP 404" in msg
    assert all(f.name in msg for f in mnist.MNIST_INFO.files)
    assert str(tmp_path / "root" / "mnist") in msg and "DLINTRO_DATA_DIR / --data-dir" in msg
    assert not (tmp_path / "root").exists()  # nothing written: no empty folders left behind


def test_an_interrupted_download_leaves_nothing_behind(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))

    def interrupt(name: str, done: int, total: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the first file

    with pytest.raises(KeyboardInterrupt):
        download.ensure_files(info, tmp_path / "root" / "data", progress=interrupt)
    assert not (tmp_path / "root").exists()


def test_oversized_file_is_refused(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    big = tmp_path / "srv" / "tiny" / "t10k-labels-idx1-ubyte.gz"
    big.write_bytes(big.read_bytes() * 3)
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz: larger than the expected"):
        download.ensure_files(info, tmp_path / "root")
    assert not (tmp_path / "root" / "tiny" / big.name).exists()


def test_offline_names_missing_files_and_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_open", lambda *a: pytest.fail("network used while offline"))
    (tmp_path / "mnist").mkdir()
    present = mnist.MNIST_INFO.files[1]
    (tmp_path / "mnist" / present.name).write_bytes(b"\0" * present.size)
    with pytest.raises(UserError) as exc:
        download.ensure_files(mnist.MNIST_INFO, tmp_path)
    msg = str(exc.value)
    missing = [f.name for i, f in enumerate(mnist.MNIST_INFO.files) if i != 1]
    assert f"missing {', '.join(missing)} in {tmp_path / 'mnist'}" in msg
    assert present.name not in msg
    assert "DLINTRO_OFFLINE" in msg and "DLINTRO_DATA_DIR / --data-dir" in msg


def test_wrong_size_file_is_an_error_not_replaced(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    (tmp_path / "root" / "tiny").mkdir(parents=True)
    short = tmp_path / "root" / "tiny" / info.files[0].name
    short.write_bytes(b"abc")
    with pytest.raises(UserError) as exc:
        download.ensure_files(info, tmp_path / "root")
    assert str(exc.value) == (
        f"{short}: size 3 bytes, expected {info.files[0].size} "
        "(truncated or not the official file; delete it to re-download)"
    )
    assert short.read_bytes() == b"abc"


def test_root_that_cannot_be_created(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match=r"cannot create .*a-file/tiny") as exc:
        download.ensure_files(info, tmp_path / "a-file")
    assert "train-images-idx3-ubyte.gz" in str(exc.value)


def test_read_only_root(tmp_path, serve, monkeypatch):
    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    (tmp_path / "root" / "tiny").mkdir(parents=True)
    # as if not writable (chmod does not stop root, who may run these tests)
    monkeypatch.setattr(download.os, "access", lambda path, mode: False)
    with pytest.raises(UserError) as exc:
        download.ensure_files(info, tmp_path / "root")
    assert f"{tmp_path / 'root' / 'tiny'} is not writable and files are missing" in str(exc.value)
    assert "train-images-idx3-ubyte.gz" in str(exc.value)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755),
                                                              (0o027, 0o640, 0o750)])  # fmt: skip
def test_downloaded_files_and_extracted_folders_get_the_usual_mode(
    tmp_path, serve, monkeypatch, umask, file_mode, dir_mode
):
    """0666 / 0777 minus the umask, as open() and mkdir() give, not mkstemp's 0600 / 0700."""
    import io
    import stat
    import tarfile

    info = tiny_dataset(tmp_path / "srv")
    use_mirror(monkeypatch, serve(tmp_path / "srv"))
    old = os.umask(umask)
    try:
        directory = download.ensure_files(info, tmp_path / "root")
        archive = tmp_path / "a.tar"
        with tarfile.open(archive, "w") as tar:
            member = tarfile.TarInfo("inner/x.bin")
            member.size, member.mode = 3, 0o644
            tar.addfile(member, io.BytesIO(b"abc"))
        out = download.extract_tar(archive, tmp_path / "out")
    finally:
        os.umask(old)
    for spec in info.files:
        assert stat.S_IMODE((directory / spec.name).stat().st_mode) == file_mode
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
