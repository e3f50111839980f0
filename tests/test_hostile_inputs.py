"""Hostile inputs that once exhausted memory, hung or ended with a traceback (issue 18, classes
1, 2 and 7): YAML bombs, decompression bombs, endless devices, FIFOs, config paths that are
not plain files (images and predict: tests/test_hostile_images.py). Each runs as a real
`dlintro` process under a memory bound (RLIMIT_AS) and a timeout, and must end with exit 2 and
one line on stderr naming the input and the limit, no traceback, and the directory exactly as
it was."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlintro.cli import app
from dlintro.data.cifar import CIFAR10_CLASSES
from dlintro.data.mnist import MNIST_FILES

GOOD = """\
name: tiny
data: {dataset: synthetic, params: {num_train: 64, num_test: 16}, batch_size: 16}
model: {name: mlp, params: {hidden: [8]}}
train: {steps: 2}
"""
NO_TF_MEMORY = 1 << 30  # a config error is found before TensorFlow starts
TF_MEMORY = 3 << 30  # a TensorFlow process needs about 2.5 GB of address space
BOUNDED = (  # argv: memory, then dlintro's arguments
    "import os, resource, sys; m = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_AS, (m, m)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'dlintro', *sys.argv[2:]])"
)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (links not followed): regular files by content, others by kind."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir" if path.is_dir() else "special"
    return out


def cli(
    *args: str | Path, cwd: Path, memory: int, timeout: float = 240, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m dlintro ARGS` with at most `memory` bytes of address space and `timeout`."""
    environ = dict(os.environ)  # the offline settings of the autouse fixture
    environ.pop("DLINTRO_DEBUG", None)
    environ.update(env or {})

    # The bound is set by a small Python that then execs dlintro, not by preexec_fn: that runs
    # in a fork of this multi-threaded process (TensorFlow's gRPC threads included), whose
    # fork handlers can abort the child ("epoll_wait error: Bad file descriptor", exit -6).
    return subprocess.run(
        [sys.executable, "-c", BOUNDED, str(memory), *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    err = result.stderr
    assert result.returncode == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "MemoryError" not in err
    for text in expected:
        assert text in err, err


def refused_in(tmp: Path, *args: str | Path, expected: tuple[str, ...], memory: int,
               env: dict | None = None) -> None:  # fmt: skip
    before = snapshot(tmp)
    assert_refused(cli(*args, cwd=tmp, memory=memory, env=env), *expected)
    assert snapshot(tmp) == before
    assert not (tmp / "run").exists() and not (tmp / "runs").exists()


# --------------------------------------------------------------------------- YAML and configs

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
)


def _case_billion_laughs(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD + BILLION_LAUGHS)
    return ["train", "c.yaml"], ("c.yaml: the YAML expands", "100,000 YAML nodes",
                                 "DLINTRO_MAX_YAML_NODES")  # fmt: skip


def _case_recursive_alias(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD + "loop: &x [1, *x]\n")
    return ["train", "c.yaml"], ("c.yaml:5: recursive YAML alias",)


def _case_recursive_mapping(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text("model: &m {name: mlp, params: {inner: *m}}\n")
    return ["train", "c.yaml"], ("c.yaml:1: recursive YAML alias",)


def _case_deep_nesting(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD + "deep: " + "[" * 5000 + "]" * 5000 + "\n")
    return ["train", "c.yaml"], ("c.yaml", "levels of nesting", "DLINTRO_MAX_YAML_DEPTH")


def _case_huge_config(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD + ("# padding\n" * 200_000))
    return ["train", "c.yaml"], ("c.yaml: cannot read the config: larger than the limit of "
                                 "1,048,576 bytes ($DLINTRO_MAX_CONFIG_BYTES",)  # fmt: skip


def _case_set_bomb(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD)
    flow = "{" + BILLION_LAUGHS.strip().replace("\n", ", ") + "}"
    return ["train", "c.yaml", "--set", f"data.params={flow}"], ("--set data.params=",
                                                                  "100,000 YAML nodes")  # fmt: skip


def _case_set_recursive(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD)
    return ["train", "c.yaml", "--set", "model.params=&p {a: *p}"], ("recursive YAML alias",)


def _case_symlink_loop(tmp: Path) -> tuple[list, tuple]:
    (tmp / "a.yaml").symlink_to("b.yaml")
    (tmp / "b.yaml").symlink_to("a.yaml")
    return ["train", "a.yaml"], ("a.yaml: cannot read the config: ", "symbolic-link loop")


def _case_directory(tmp: Path) -> tuple[list, tuple]:
    (tmp / "configs").mkdir()
    return ["train", "configs"], ("configs: cannot read the config: it is a directory",)


def _case_fifo(tmp: Path) -> tuple[list, tuple]:
    os.mkfifo(tmp / "c.yaml")  # opening it to read would wait for a writer forever
    return ["train", "c.yaml"], ("c.yaml: cannot read the config: it is a FIFO",)


def _case_endless_device(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").symlink_to("/dev/zero")
    return ["train", "c.yaml"], ("c.yaml: cannot read the config: it is a character device",)


def _case_dangling_link(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").symlink_to("gone.yaml")
    return ["train", "c.yaml"], ("c.yaml: cannot read the config: a broken symbolic link",)


def _case_not_utf8(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_bytes(GOOD.encode() + b"# caf\xe9\n")
    return ["train", "c.yaml"], ("c.yaml: cannot read the config: not UTF-8 text (byte 0xe9",)


def _case_nul_in_text(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_bytes(GOOD.encode() + b"x: a\x00b\n")
    return ["train", "c.yaml"], ("c.yaml:5: not YAML text: character #x0000",)


def _case_bad_limit_value(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD)
    return ["train", "c.yaml"], ("$DLINTRO_MAX_CONFIG_BYTES='lots': expected a positive",)


def _case_lowered_limit(tmp: Path) -> tuple[list, tuple]:
    (tmp / "c.yaml").write_text(GOOD)
    return ["train", "c.yaml"], ("larger than the limit of 100 bytes ($DLINTRO_MAX_CONFIG_BYTES",)


CONFIG_ENV = {
    "bad_limit_value": {"DLINTRO_MAX_CONFIG_BYTES": "lots"},
    "lowered_limit": {"DLINTRO_MAX_CONFIG_BYTES": "100"},
}
CONFIG_CASES = [
    _case_billion_laughs, _case_recursive_alias, _case_recursive_mapping, _case_deep_nesting,
    _case_huge_config, _case_set_bomb, _case_set_recursive, _case_symlink_loop, _case_directory,
    _case_fifo, _case_endless_device, _case_dangling_link, _case_not_utf8, _case_nul_in_text,
    _case_bad_limit_value, _case_lowered_limit,
]  # fmt: skip


@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda f: f.__name__.removeprefix("_case_"))
def test_config_inputs(case: Callable[[Path], tuple[list, tuple]], tmp_path: Path) -> None:
    args, expected = case(tmp_path)
    env = CONFIG_ENV.get(case.__name__.removeprefix("_case_"))
    refused_in(tmp_path, *args, expected=expected, memory=NO_TF_MEMORY, env=env)


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_config(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(GOOD)
    (tmp_path / "c.yaml").chmod(0)
    refused_in(tmp_path, "train", "c.yaml", expected=("c.yaml: cannot read the config: "
               "Permission denied",), memory=NO_TF_MEMORY)  # fmt: skip


@pytest.mark.parametrize("command", ["train", "tune"])
def test_nul_byte_in_a_config_path(command: str, tmp_path: Path) -> None:
    """argv cannot hold a NUL byte, so this one goes through the CLI runner."""
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, [command, str(tmp_path / "c\0.yaml")])
    assert result.exit_code == 2, result.stderr
    err = result.stderr
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "c\\x00.yaml" in err and ("NUL byte" in err or "null byte" in err), err
    assert snapshot(tmp_path) == before
    from dlintro import config
    from dlintro.errors import UserError

    with pytest.raises(UserError) as exc:  # the library's own words, whatever the CLI checks
        config.load(tmp_path / "c\0.yaml")
    assert (
        str(exc.value)
        == f"{tmp_path}/c\\x00.yaml: cannot read the config: the path contains a NUL byte"
    )


# --------------------------------------------------------------------------- data files


def write_zero_bomb(path: Path, prefix: bytes, size: int, gz: bool = True) -> None:
    """A deflate stream (gzip, or zlib when not `gz`) of `prefix` and then zeros, cut at
    exactly `size` bytes: it inflates about 1000-fold and never ends before the cut."""
    chunk = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15 if gz else 15)
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" if gz else b"")
    out += c.compress(prefix + chunk) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes every time now
    out += repeat * ((size - len(out)) // len(repeat) + 1)
    path.write_bytes(bytes(out[:size]))


def mnist_dir(tmp: Path, first: Callable[[Path, int], None]) -> Path:
    """<tmp>/data/mnist/ with the official file sizes; the training images made by `first`."""
    folder = tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    for i, spec in enumerate(MNIST_FILES):
        if i == 0:
            first(folder / spec.name, spec.size)
        else:
            (folder / spec.name).write_bytes(bytes(spec.size))
    return tmp / "data"


def train_on(tmp: Path, dataset: str, data: Path, params: str = "") -> list:
    (tmp / "c.yaml").write_text(
        f"name: t\ndata: {{dataset: {dataset}{params}, batch_size: 2}}\n"
        "model: {name: mlp, params: {hidden: [4]}}\ntrain: {steps: 1}\n"
    )
    return ["train", "c.yaml", "--data-dir", data, "--run-dir", tmp / "run"]


def _data_gzip_bomb(tmp: Path) -> tuple[list, tuple]:
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28)
    data = mnist_dir(tmp, lambda p, size: write_zero_bomb(p, header, size))
    return train_on(tmp, "mnist", data), (
        "train-images-idx3-ubyte.gz: trailing bytes: header says 60000x28x28 = 47040000 bytes",
        "the rest not read",
    )


def _data_idx_declares_too_much(tmp: Path) -> tuple[list, tuple]:
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4_000_000_000, 28, 28)

    def huge(path: Path, size: int) -> None:
        raw = gzip.compress(header, mtime=0)
        path.write_bytes(raw + bytes(size - len(raw)))

    return train_on(tmp, "mnist", mnist_dir(tmp, huge)), (
        "train-images-idx3-ubyte.gz: header declares 4000000000x28x28",
        "more than the limit of 1,073,741,824 bytes ($DLINTRO_MAX_DATA_FILE_BYTES",
    )


def cifar_dir(tmp: Path, damage: Callable[[Path], None]) -> Path:
    folder = tmp / "data" / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    record = bytes(3073)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(record)
    damage(folder)
    return tmp / "data"


def _relink(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def _data_cifar_endless_batch(tmp: Path) -> tuple[list, tuple]:
    data = cifar_dir(tmp, lambda d: _relink(d / "data_batch_1.bin", "/dev/zero"))
    return train_on(tmp, "cifar10", data), (
        "data_batch_1.bin: is a character device, not a regular file",
    )


def _data_cifar_endless_names(tmp: Path) -> tuple[list, tuple]:
    data = cifar_dir(tmp, lambda d: _relink(d / "batches.meta.txt", "/dev/urandom"))
    return train_on(tmp, "cifar10", data), ("batches.meta.txt: is a character device",)


def _data_cifar_oversized_batch(tmp: Path) -> tuple[list, tuple]:
    def grow(d: Path) -> None:
        with open(d / "data_batch_1.bin", "wb") as f:
            f.truncate(200_000_000)  # sparse: no disk used

    return train_on(tmp, "cifar10", cifar_dir(tmp, grow)), (
        "data_batch_1.bin: 200,000,000 bytes, larger than 50,000 records of 3073 bytes",
    )


DATA_CASES = [
    _data_gzip_bomb, _data_idx_declares_too_much, _data_cifar_endless_batch,
    _data_cifar_endless_names, _data_cifar_oversized_batch,
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", DATA_CASES, ids=lambda f: f.__name__.removeprefix("_data_"))
def test_data_files(case: Callable[[Path], tuple[list, tuple]], tmp_path: Path) -> None:
    args, expected = case(tmp_path)
    refused_in(tmp_path, *args, expected=expected, memory=TF_MEMORY)


def test_cifar_fifo_batch_is_refused_without_waiting(tmp_path: Path) -> None:
    """In process (no TensorFlow needed to read the records): a FIFO is never opened."""
    from dlintro.data import sources
    from dlintro.errors import UserError

    def fifo(d: Path) -> None:
        (d / "data_batch_1.bin").unlink()
        os.mkfifo(d / "data_batch_1.bin")

    with pytest.raises(UserError, match=r"data_batch_1\.bin: is a FIFO"):
        sources.load_dataset("cifar10", cifar_dir(tmp_path, fifo))
