"""One writer per run directory: an exclusive lock (flock) on `RUN/.lock`, held for the whole
life of a training process (a fresh run from the moment it claims its directory, a resumed run
from before it validates anything), so that two processes never train into one run, even when
started at the same moment. The kernel drops the lock when its process dies (kill -9 too), so a
lock is never stale; the holder writes its pid into the file, and a second process is refused
with a UserError naming it.

The file exists only while a process holds it: the holder removes it before letting go. A
process that opened the old file meanwhile sees (after locking) that the path now names
another file or none, and tries again, so a removed lock file never admits a second writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from dlintro.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    """The exclusive lock of run directory `run_dir`: `with RunLock(path): ...` or
    acquire()/release()."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise UserError naming the process that holds it."""
        for _ in range(20):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(fd) or holder(self.run_dir)
                os.close(fd)
                raise refusal(self.run_dir, pid) from None
            except OSError as exc:
                os.close(fd)
                raise UserError(
                    f"{self.path}: cannot lock the run directory ({exc.strerror or exc})"
                ) from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)  # its holder removed the file between our open and our lock
        raise UserError(f"{self.path}: could not lock the run directory (it keeps changing)")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(
                f"{self.path}: cannot create the run directory's lock file ({exc.strerror or exc})"
            ) from None

    def release(self) -> None:
        """Remove the lock file and let go (nothing when not held)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # removed while still held (see the module doc)
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self if self.fd is not None else self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(fd: int, wait: float = 1.0) -> int | None:
    """The pid the holder wrote into the lock file; it writes it right after locking, so wait a
    moment for it."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def holder(run_dir: str | Path) -> int | None:
    """The pid of the process holding `run_dir`'s lock, None when none does or it cannot be
    told. Only looks (the kernel's table of locks, /proc/locks on Linux): takes no lock and
    writes nothing, so it never disturbs a process that is claiming the run."""
    try:
        st = os.stat(Path(run_dir) / LOCK_NAME)
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where:
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def refusal(run_dir: str | Path, pid: int | None) -> UserError:
    """The error for a run directory that another process holds."""
    run_dir = Path(run_dir)
    who = f"process {pid}" if pid else "another process"
    return UserError(
        f"{run_dir}: the run is still being written by {who} (it holds {run_dir / LOCK_NAME}); "
        "wait or stop it"
    )


__all__ = ["LOCK_NAME", "RunLock", "holder", "refusal"]
