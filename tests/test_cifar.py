"""CIFAR-10/100: the binary format, safe extraction, downloads (127.0.0.1 only) and checks.

The official archives are not available here: every test writes small files in the official
formats itself.
"""

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dlintro.data import cifar, download, sources
from dlintro.errors import UserError
from dlintro.registry import ParamsError

C10, C100 = cifar.CIFAR10_LAYOUT, cifar.CIFAR100_LAYOUT


# ------------------------------------------------------------------------------------ helpers


def records(n, label_bytes, seed, limits):
    """n random records: (bytes, images [n,32,32,3], labels [n, label_bytes])."""
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = np.stack([rng.integers(0, lim, n) for lim in limits], axis=1).astype(np.uint8)
    raw = np.concatenate([labels, planes.reshape(n, -1)], axis=1).tobytes()
    assert len(raw) == n * (label_bytes + 3072)
    return raw, planes.transpose(0, 2, 3, 1), labels


def names_text(names):
    return "\n".join(names) + "\n\n"  # the official files end with blank lines


def write_tar(path: Path, members: dict[str, bytes], extra=()) -> Path:
    """A .tar.gz of regular files (name -> bytes) plus extra prepared (TarInfo, data) pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def spec_of(path: Path) -> sources.FileSpec:
    data = path.read_bytes()
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    return sources.FileSpec(path.name, len(data), md5, sha)


def cifar10_members(counts=(2, 3, 1, 2, 2), test=4, bad_label=None, names=cifar.CIFAR10_CLASSES):
    """Members of a small cifar-10-binary.tar.gz and the expected arrays."""
    members, xs, ys = {}, [], []
    for i, n in enumerate(counts, start=1):
        raw, x, y = records(n, 1, seed=i, limits=(10,))
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = raw
        xs.append(x)
        ys.append(y[:, 0])
    raw_t, xt, yt = records(test, 1, seed=99, limits=(10,))
    if bad_label is not None:
        raw_t = bytes([bad_label]) + raw_t[1:]
    members["cifar-10-batches-bin/test_batch.bin"] = raw_t
    members["cifar-10-batches-bin/batches.meta.txt"] = names_text(names).encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return members, (np.concatenate(xs), np.concatenate(ys), xt, yt[:, 0])


def tiny_cifar10(directory: Path, **kw):
    """directory/cifar10/cifar-10-binary.tar.gz and a DatasetInfo with its checksums."""
    members, expected = cifar10_members(**kw)
    archive = write_tar(directory / "cifar10" / "cifar-10-binary.tar.gz", members)
    info = dataclasses.replace(
        cifar.CIFAR10_INFO,
        files=(spec_of(archive),),
        num_train=len(expected[0]),
        num_test=len(expected[2]),
    )
    return info, expected


def tiny_cifar100(directory: Path, label_mode="fine", bad_coarse=None):
    raw, x, y = records(6, 2, seed=1, limits=(20, 100))
    if bad_coarse is not None:
        raw = bytes([bad_coarse]) + raw[1:]
    raw_t, xt, yt = records(3, 2, seed=2, limits=(20, 100))
    members = {
        "cifar-100-binary/train.bin": raw,
        "cifar-100-binary/test.bin": raw_t,
        "cifar-100-binary/fine_label_names.txt": names_text(cifar.CIFAR100_FINE).encode(),
        "cifar-100-binary/coarse_label_names.txt": names_text(cifar.CIFAR100_COARSE).encode(),
    }
    archive = write_tar(directory / "cifar100" / "cifar-100-binary.tar.gz", members)
    info = dataclasses.replace(
        cifar.cifar100_info(label_mode), files=(spec_of(archive),), num_train=6, num_test=3
    )
    return info, (x, y, xt, yt)


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ------------------------------------------------------------------------------------- format


def test_parse_records_transposes_planes_to_hwc():
    raw, x, labels = records(3, 1, seed=0, limits=(10,))
    images, got = cifar.parse_records(raw, "mem", 1)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(got, labels)
    # record layout: label, then 1024 red, 1024 green, 1024 blue bytes, rows of 32
    first = np.frombuffer(raw[:3073], np.uint8)
    r, g, b = (first[1 + k * 1024 : 1 + (k + 1) * 1024].reshape(32, 32) for k in range(3))
    assert tuple(images[0, 5, 7]) == (r[5, 7], g[5, 7], b[5, 7])
    assert int(got[0, 0]) == first[0]


@pytest.mark.parametrize("label_bytes", [1, 2])
def test_truncated_record_file_is_named(tmp_path, label_bytes):
    raw, _, _ = records(4, label_bytes, seed=0, limits=(10,) * label_bytes)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(raw[:-100])
    record = 3072 + label_bytes
    with pytest.raises(UserError) as exc:
        cifar.read_records(path, label_bytes)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    want = f"not a whole number of {record}-byte records (3 records and {record - 100} bytes)"
    assert want in msg
    path.write_bytes(b"")
    with pytest.raises(UserError, match="0 records and 0 bytes"):
        cifar.read_records(path, label_bytes)
    with pytest.raises(UserError, match="file not found"):
        cifar.read_records(tmp_path / "missing.bin", label_bytes)


def test_class_name_files(tmp_path):
    path = tmp_path / "batches.meta.txt"
    path.write_text(names_text(cifar.CIFAR10_CLASSES))
    assert cifar.read_class_names(path) == cifar.CIFAR10_CLASSES
    assert cifar.CIFAR10_CLASSES[0] == "airplane" and cifar.CIFAR10_CLASSES[-1] == "truck"
    assert len(cifar.CIFAR100_FINE) == 100 and len(set(cifar.CIFAR100_FINE)) == 100
    assert len(cifar.CIFAR100_COARSE) == 20
    assert list(cifar.CIFAR100_FINE) == sorted(cifar.CIFAR100_FINE)


# ---------------------------------------------------------------------------------- datasets


def test_registry_infos_and_params():
    c10 = sources.dataset_info("cifar10")
    assert c10.input_shape == (32, 32, 3) and c10.num_classes == 10
    assert (c10.num_train, c10.num_test) == (50000, 10000)
    (spec,) = c10.files
    assert spec.name == "cifar-10-binary.tar.gz" and spec.size == 170052171
    assert spec.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert c10.mirrors == ("https://www.cs.toronto.edu/~kriz/",)
    fine = sources.dataset_info("cifar100")
    coarse = sources.dataset_info("cifar100", {"label_mode": "coarse"})
    assert fine.num_classes == 100 and fine.class_names[:2] == ("apple", "aquarium_fish")
    assert coarse.num_classes == 20 and coarse.class_names[-1] == "vehicles_2"
    assert fine.files[0].md5 == "03b5dce01913d631647c71ecec9e9cb8"
    with pytest.raises(ParamsError, match=r"'label_mode': input should be 'fine' or 'coarse'"):
        sources.dataset_info("cifar100", {"label_mode": "medium"})
    with pytest.raises(ParamsError, match="unknown parameter"):
        sources.load_dataset("cifar10", Path("/x"), {"label_mode": "fine"})


def test_missing_archive_offline_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_open", lambda *a: pytest.fail("network used while offline"))
    with pytest.raises(UserError) as exc:
        sources.load_dataset("cifar100", tmp_path, {"label_mode": "coarse"})
    msg = str(exc.value)
    assert "missing cifar-100-binary.tar.gz" in msg and str(tmp_path / "cifar100") in msg
    assert "DLINTRO_OFFLINE" in msg


def test_missing_cifar10_beside_a_jpeg_copy_says_how_to_train_on_it(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_open", lambda *a: pytest.fail("network used while offline"))
    with pytest.raises(UserError) as exc:
        sources.load_dataset("cifar10", tmp_path, {})
    assert "JPEG copy" not in str(exc.value)  # no copy: the plain message
    (tmp_path / "cifar10_jpeg" / "train").mkdir(parents=True)
    with pytest.raises(UserError) as exc:
        sources.load_dataset("cifar10", tmp_path, {})
    msg = str(exc.value)
    assert "missing cifar-10-binary.tar.gz" in msg and "\n" not in msg
    assert "--set data.dataset=image_folder" in msg and str(tmp_path / "cifar10_jpeg") in msg
    assert not (tmp_path / "cifar10").exists()  # nothing written


def test_official_data_is_present_as_archive_or_folder(tmp_path):
    assert not cifar.present(cifar.CIFAR10_INFO, C10, tmp_path)
    (tmp_path / "cifar10").mkdir()
    assert not cifar.present(cifar.CIFAR10_INFO, C10, tmp_path)  # an empty folder is not
    (tmp_path / "cifar10" / "cifar-10-batches-bin").mkdir()
    assert cifar.present(cifar.CIFAR10_INFO, C10, tmp_path)  # extracted by hand
    (tmp_path / "cifar10" / "cifar-10-batches-bin").rmdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"")
    assert cifar.present(cifar.CIFAR10_INFO, C10, tmp_path)


def test_load_cifar10_from_archive(tmp_path):
    info, (x, y, xt, yt) = tiny_cifar10(tmp_path)
    arrays = cifar.load_cifar(info, C10, tmp_path)
    for got, want in zip(arrays, (x, y, xt, yt), strict=True):
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable
    assert arrays.x_train.shape == (10, 32, 32, 3) and arrays.y_test.dtype == np.uint8
    folder = tmp_path / "cifar10" / "extracted" / "cifar-10-batches-bin"
    assert (folder / "data_batch_5.bin").is_file()
    assert tree(tmp_path / "cifar10")[:2] == ["cifar-10-binary.tar.gz", "extracted"]
    assert not [p for p in tree(tmp_path / "cifar10") if ".part" in p]
    # extracted once: the archive is no longer needed, and the parse is cached
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").unlink()
    again = cifar.load_cifar(info, C10, tmp_path)
    assert again.x_train is arrays.x_train


def test_hand_extracted_folder_is_used(tmp_path):
    members, (x, y, _, _) = cifar10_members()
    for name, data in members.items():
        (tmp_path / "cifar10" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / name).write_bytes(data)
    info = dataclasses.replace(cifar.CIFAR10_INFO, num_train=10, num_test=4)
    arrays = cifar.load_cifar(info, C10, tmp_path)  # no archive at all
    np.testing.assert_array_equal(arrays.x_train, x)
    np.testing.assert_array_equal(arrays.y_train, y)


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_load_cifar100_label_modes(tmp_path, mode):
    info, (x, labels, xt, labels_t) = tiny_cifar100(tmp_path, mode)
    byte = 1 if mode == "fine" else 0
    arrays = cifar.load_cifar(info, C100, tmp_path, label_byte=byte)
    cifar._parse_folder.cache_clear()  # as in a new process: the extracted folder is found
    (tmp_path / "cifar100" / info.files[0].name).unlink()
    again = cifar.load_cifar(info, C100, tmp_path, label_byte=byte)
    np.testing.assert_array_equal(again.y_train, arrays.y_train)
    assert (tmp_path / "cifar100" / "extracted" / "cifar-100-binary" / "train.bin").is_file()
    np.testing.assert_array_equal(arrays.x_train, x)
    np.testing.assert_array_equal(arrays.x_test, xt)
    np.testing.assert_array_equal(arrays.y_train, labels[:, byte])
    np.testing.assert_array_equal(arrays.y_test, labels_t[:, byte])
    assert arrays.y_train.max() < info.num_classes


def test_label_out_of_range_is_named(tmp_path):
    info, _ = tiny_cifar10(tmp_path, bad_label=10)
    with pytest.raises(UserError) as exc:
        cifar.load_cifar(info, C10, tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'cifar10' / 'extracted' / 'cifar-10-batches-bin' / 'test_batch.bin'}"
        ": label 10 out of range 0..9"
    )
    info, _ = tiny_cifar100(tmp_path / "c100", "fine", bad_coarse=20)  # checked in fine mode too
    with pytest.raises(UserError, match=r"train.bin: label 20 \(coarse_label_names.txt\) out of"):
        cifar.load_cifar(info, C100, tmp_path / "c100")


def test_wrong_counts_and_names_are_named(tmp_path):
    info, _ = tiny_cifar10(tmp_path)
    with pytest.raises(UserError, match=r"data_batch_5.bin hold 10 records, expected 11"):
        cifar.load_cifar(dataclasses.replace(info, num_train=11), C10, tmp_path)
    info, _ = tiny_cifar10(tmp_path / "b", names=cifar.CIFAR10_CLASSES[:9])
    with pytest.raises(UserError, match=r"batches.meta.txt: 9 class names, expected 10"):
        cifar.load_cifar(info, C10, tmp_path / "b")
    renamed = ("plane", *cifar.CIFAR10_CLASSES[1:])
    info, _ = tiny_cifar10(tmp_path / "c", names=renamed)
    with pytest.raises(UserError, match=r"class 0 is named 'plane', expected 'airplane'"):
        cifar.load_cifar(info, C10, tmp_path / "c")


def test_checksum_mismatch_refuses_to_extract(tmp_path):
    info, _ = tiny_cifar10(tmp_path)
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"checksum mismatch: expected sha256 .* delete it"):
        cifar.load_cifar(info, C10, tmp_path)
    assert tree(tmp_path / "cifar10") == ["cifar-10-binary.tar.gz"]


def test_download_from_local_mirror(tmp_path, serve, monkeypatch):
    info, (_, y, xt, _) = tiny_cifar10(tmp_path / "srv")
    url = serve(tmp_path / "srv")
    monkeypatch.setenv("DLINTRO_MIRROR", url)
    monkeypatch.delenv("DLINTRO_OFFLINE")
    root = tmp_path / "root"
    arrays = cifar.load_cifar(info, C10, root)
    np.testing.assert_array_equal(arrays.x_test, xt)
    np.testing.assert_array_equal(arrays.y_train, y)
    served = tmp_path / "srv" / "cifar10" / "cifar-10-binary.tar.gz"
    assert (root / "cifar10" / served.name).read_bytes() == served.read_bytes()
    assert all(r["ok"] for r in download.verify_files(info, root))


# --------------------------------------------------------------------------------- extraction


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"../evil": b"x"}, "a '..' path component"),
        ({"ok/../../evil": b"x"}, "a '..' path component"),
        ({"/tmp/evil-abs": b"x"}, "an absolute path"),
        ([_link("cifar-10-batches-bin/link", "/etc/passwd", tarfile.SYMTYPE)], "a symbolic link"),
        ([_link("cifar-10-batches-bin/link", "../../evil", tarfile.SYMTYPE)], "a symbolic link"),
        ([_link("cifar-10-batches-bin/hard", "readme", tarfile.LNKTYPE)], "a hard link"),
    ],
)
def test_extract_refuses_unsafe_members(tmp_path, extra, problem):
    members = {"cifar-10-batches-bin/readme": b"fine"}
    pairs = []
    if isinstance(extra, dict):
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            pairs.append((info, data))
    else:
        pairs = extra
    work = tmp_path / "work"
    archive = write_tar(work / "dl" / "a.tar.gz", members, pairs)
    with pytest.raises(UserError) as exc:
        download.extract_tar(archive, work / "dl" / "out")
    msg = str(exc.value)
    assert msg.startswith(f"{archive}: refusing to extract member ") and problem in msg
    assert tree(tmp_path) == ["work", "work/dl", "work/dl/a.tar.gz"]  # nothing written anywhere
    assert not Path("/tmp/evil-abs").exists()


def test_unsafe_archive_refused_through_the_loader(tmp_path):
    members, _ = cifar10_members()
    archive = write_tar(
        tmp_path / "cifar10" / "cifar-10-binary.tar.gz",
        members,
        [_link("cifar-10-batches-bin/data_batch_6.bin", "/etc/passwd", tarfile.SYMTYPE)],
    )
    info = dataclasses.replace(
        cifar.CIFAR10_INFO, files=(spec_of(archive),), num_train=10, num_test=4
    )
    with pytest.raises(UserError, match=r"refusing to extract member .*symbolic link"):
        cifar.load_cifar(info, C10, tmp_path)
    assert tree(tmp_path) == ["cifar10", "cifar10/cifar-10-binary.tar.gz"]


def test_extract_rejects_other_members_and_corrupt_archives(tmp_path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    archive = write_tar(tmp_path / "fifo.tar.gz", {}, [(fifo, None)])
    with pytest.raises(UserError, match="not a regular file or folder"):
        download.extract_tar(archive, tmp_path / "out")
    dup = write_tar(tmp_path / "dup.tar.gz", {"a": b"1"}, [(tarfile.TarInfo("a"), b"")])
    with pytest.raises(UserError, match="it is a duplicate"):
        download.extract_tar(dup, tmp_path / "out")
    good = write_tar(tmp_path / "good.tar.gz", {"d/a": b"1" * 5000})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(UserError, match="corrupt or truncated archive"):
        download.extract_tar(cut, tmp_path / "out")
    with pytest.raises(UserError, match="unpacks to more than 100 bytes"):
        download.extract_tar(good, tmp_path / "out", max_bytes=100)
    assert not (tmp_path / "out").exists()
    assert download.extract_tar(good, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "d" / "a").read_bytes() == b"1" * 5000
    assert not [p for p in tree(tmp_path) if ".part" in p]
