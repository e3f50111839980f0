"""Make a dataset's official files present and trustworthy: check, download, verify.

Files live at `<root>/<dataset>/<official name>`. A present file is checked by size on every load
(cheap); `verify_files` does the full sha256 check. Missing files are downloaded from the
dataset's mirrors (or `DLINTRO_MIRROR`), streamed into a temporary file in the same directory,
checked (size and sha256) and renamed atomically, so a partial file never has the final name.
`DLINTRO_OFFLINE=1` forbids downloads. `extract_tar` unpacks an archive safely (regular files
and folders inside the target only) into a folder that appears atomically. Downloaded files get
the usual mode (0666 minus the umask) and extracted folders 0777 minus it, not the 0600 / 0700
of their temporary names.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from dlintro.errors import UserError
from dlintro.runfiles import file_mode

if TYPE_CHECKING:
    from dlintro.data.sources import DatasetInfo, FileSpec

Progress = Callable[[str, int, int], None]
"""progress(file_name, bytes_done, bytes_total), called while a file downloads."""

CHUNK = 1 << 20
TIMEOUT = 30.0
WHERE_HINT = "or set DLINTRO_DATA_DIR / --data-dir to a directory holding {name}/"


def offline() -> bool:
    """True when `DLINTRO_OFFLINE` forbids downloads (1, true, yes, on)."""
    return os.environ.get("DLINTRO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def mirrors_for(info: DatasetInfo) -> list[str]:
    """Base URLs to try in order; `DLINTRO_MIRROR` replaces them with `<mirror>/<dataset>/`."""
    override = os.environ.get("DLINTRO_MIRROR", "").strip()
    if override:
        return [f"{override.rstrip('/')}/{info.name}/"]
    return list(info.mirrors)


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_size(path: Path, spec: FileSpec) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise UserError(
            f"{path}: size {size} bytes, expected {spec.size} "
            "(truncated or not the official file; delete it to re-download)"
        )


def verify_files(info: DatasetInfo, root: Path) -> list[dict[str, Any]]:
    """Full check of every file (presence, size, sha256); one dict per file, nothing raised.

    Each dict: name, path, present, size, expected_size, sha256 (None when not read),
    expected_sha256, ok, problem ('' when ok).
    """
    directory = Path(root) / info.name
    results = []
    for spec in info.files:
        path = directory / spec.name
        row: dict[str, Any] = {
            "name": spec.name,
            "path": str(path),
            "present": path.is_file(),
            "size": None,
            "expected_size": spec.size,
            "sha256": None,
            "expected_sha256": spec.sha256,
            "ok": False,
            "problem": "",
        }
        if not row["present"]:
            row["problem"] = "missing"
        else:
            row["size"] = path.stat().st_size
            if row["size"] != spec.size:
                row["problem"] = f"size {row['size']} bytes, expected {spec.size}"
            else:
                row["sha256"] = sha256_of(path)
                if row["sha256"] != spec.sha256:
                    row["problem"] = f"sha256 {row['sha256']}, expected {spec.sha256}"
        row["ok"] = not row["problem"]
        results.append(row)
    return results


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _open(url: str, timeout: float) -> Any:
    """urlopen, kept as a seam so that tests can refuse any host but 127.0.0.1."""
    return urllib.request.urlopen(url, timeout=timeout)


def _fetch(url: str, spec: FileSpec, directory: Path, report: Progress | None) -> str:
    """Download `url` to `directory/spec.name` if size and sha256 match; else the reason."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        return f"cannot create a temporary file in {directory} ({exc.strerror or exc})"
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, file_mode())  # the usual 0666 minus the umask, not mkstemp's 0600
        digest = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out, contextlib.closing(_open(url, TIMEOUT)) as response:
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > spec.size:
                    return f"{url}: larger than the expected {spec.size} bytes"
                digest.update(chunk)
                out.write(chunk)
                if report is not None:
                    report(spec.name, done, spec.size)
            out.flush()
            os.fsync(out.fileno())
        if done != spec.size:
            return f"{url}: got {done} bytes, expected {spec.size}"
        actual = digest.hexdigest()
        if actual != spec.sha256:
            return (
                f"{url}: checksum mismatch for {spec.name}: "
                f"expected sha256 {spec.sha256}, got {actual}"
            )
        os.replace(tmp, directory / spec.name)
        return ""
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {_one_line(exc.reason)}"
    except urllib.error.URLError as exc:
        return f"{url}: {_one_line(exc.reason)}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"{url}: {_one_line(exc) or type(exc).__name__}"
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _progress_reporter(progress: Progress | None) -> Iterator[Progress | None]:
    """The given callback, or a rich bar on a terminal, or nothing (no output)."""
    if progress is not None or not sys.stderr.isatty():
        yield progress
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    tasks: dict[str, Any] = {}
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:

        def report(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"downloading {name}", total=total)
            bar.update(tasks[name], completed=done)

        yield report


def _writable_dir(directory: Path, missing: list[str], dataset: str) -> None:
    """Create `directory` or explain in one line why the missing files cannot go there."""
    hint = f"put {', '.join(missing)} there by hand, " + WHERE_HINT.format(name=dataset)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{dataset}: cannot create {directory} ({exc.strerror or exc}) to download "
            f"missing files; {hint}"
        ) from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"{dataset}: {directory} is not writable and files are missing; {hint}")


def ensure_files(info: DatasetInfo, root: Path, progress: Progress | None = None) -> Path:
    """Return `<root>/<dataset>` once every official file is there (downloading what is missing).

    Present files are checked by size; a wrong size is an error (never silently replaced).
    """
    directory = Path(root).expanduser() / info.name
    missing = []
    for spec in info.files:
        path = directory / spec.name
        if path.is_file():
            _check_size(path, spec)
        else:
            missing.append(spec)
    if not missing:
        return directory
    names = [spec.name for spec in missing]
    hint = WHERE_HINT.format(name=info.name)
    where = f"put the official file(s) {', '.join(names)} in {directory}, {hint}"
    if offline():
        raise UserError(
            f"{info.name}: missing {', '.join(names)} in {directory} and downloads are off "
            f"(DLINTRO_OFFLINE is set); {where}"
        )
    mirrors = mirrors_for(info)
    if not mirrors:
        raise UserError(f"{info.name}: missing {', '.join(names)}, no mirror known; {where}")
    new_dirs = [d for d in (directory, *directory.parents) if not d.exists()]
    _writable_dir(directory, names, info.name)
    try:
        with _progress_reporter(progress) as report:
            for spec in missing:
                reasons = []
                for base in mirrors:
                    reason = _fetch(f"{base.rstrip('/')}/{spec.name}", spec, directory, report)
                    if not reason:
                        break
                    reasons.append(reason)
                else:
                    raise UserError(
                        f"{info.name}: cannot download {spec.name} ({'; '.join(reasons)}); {where}"
                    )
    except BaseException:
        # a failed or interrupted download leaves no empty folder behind: an empty
        # <data dir>/cifar10/ would look like the official data's place to the next reader
        for created in new_dirs:
            with contextlib.suppress(OSError):
                created.rmdir()  # only if still empty: files already fetched stay, a cache
        raise
    return directory


MAX_EXTRACT_BYTES = 4 << 30
_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    e for e in (getattr(tarfile, "FilterError", None),) if e is not None
)


def _dir_mode() -> int:
    """A new folder's usual mode: file_mode() with search (x) where reading is allowed
    (umask 022: 0755)."""
    mode = file_mode()
    return mode | (mode & 0o444) >> 2


def _member_problem(member: tarfile.TarInfo) -> str:
    """Why an archive member may not be extracted ('' when it may)."""
    name = member.name
    if not name or "\0" in name:
        return "has an empty or invalid name"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' path component"
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        return f"is a {kind} link (to {member.linkname!r})"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    return ""


def extract_tar(archive: Path, target: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Unpack a tar archive (any compression) into the new folder `target`; return `target`.

    Every member is checked before it is written: absolute paths, '..' components, links of
    either kind, devices and duplicates are refused (a UserError naming the archive and the
    member), and tarfile's 'data' filter is applied on top. Extraction goes to a temporary
    sibling folder that is renamed to `target` only when complete, so nothing is ever written
    outside `target` and a partial extraction never has the final name.
    """
    archive, target = Path(archive), Path(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    except OSError as exc:
        raise UserError(
            f"{archive}: cannot create a folder in {target.parent} to extract into "
            f"({exc.strerror or exc})"
        ) from None
    use_filter = hasattr(tarfile, "data_filter")
    try:
        with tarfile.open(archive, "r:*") as tar:
            seen: set[str] = set()
            total = 0
            for member in tar:
                problem = _member_problem(member)
                key = PurePosixPath(member.name).as_posix().strip("/")
                if not problem and member.isreg() and key in seen:
                    problem = "is a duplicate"
                if problem:
                    raise UserError(
                        f"{archive}: refusing to extract member {member.name!r}: it {problem}; "
                        "only regular files and folders inside the archive are allowed"
                    )
                seen.add(key)
                total += member.size
                if total > max_bytes:
                    raise UserError(f"{archive}: unpacks to more than {max_bytes} bytes; refused")
                if use_filter:
                    tar.extract(member, tmp, filter="data")
                else:  # pragma: no cover - Python without tarfile filters; checked above
                    tar.extract(member, tmp, set_attrs=False)
        os.chmod(tmp, _dir_mode())  # mkdtemp makes it 0700
        os.replace(tmp, target)
    except _FILTER_ERRORS as exc:
        raise UserError(f"{archive}: refusing to extract: {_one_line(exc)}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{archive}: corrupt or truncated archive ({_one_line(exc) or type(exc).__name__}); "
            "delete it to download it again"
        ) from None
    except OSError as exc:
        if target.is_dir():  # extracted meanwhile by another process
            return target
        raise UserError(
            f"{archive}: cannot extract into {target} ({exc.strerror or exc})"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
