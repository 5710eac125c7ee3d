"""Writing files so that nothing finished is lost and nothing half-written is left.

Two primitives, and every file dynbench writes goes through one of them:

* `append_line`: one line appended with ONE `os.write` on an `O_APPEND` descriptor, then fsync.
  Concurrent appenders cannot interleave or overwrite each other (the kernel places each write
  at the end), and a write that fails (a full disk, a quota) is cut back to the file's previous
  length, so every earlier line stays whole.
* `write_atomic` / `write_together`: whole files through a temp file + fsync + rename, so readers
  see the old or the new content, never a mix; `write_together` renames several files only once
  all of them were written (a command's outputs appear together or not at all).

Every OS error becomes one `DynbenchError` line naming the folder and the fix (`DiskFull` for
ENOSPC / EDQUOT: "free space and --resume"). Files are created 0644 less the umask, like
`records.jsonl` (`mkstemp` alone would leave 0600).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from dynbench.errors import DynbenchError

FILE_MODE = 0o644
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(DynbenchError):
    """No space (or quota) left where dynbench writes."""


def io_error(exc: OSError, path: Path) -> DynbenchError:
    """One line for an OS error while writing `path` (DiskFull for a full disk or quota)."""
    if exc.errno in _FULL:
        return DiskFull(f"disk full at {path.parent}; free space and --resume (every finished row is kept)")
    return DynbenchError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path")


def append_line(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` (one whole line, ending in a newline) with one write; on failure the file is
    cut back to its previous length and a DynbenchError raised (module docstring)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise io_error(exc, path) from None
    try:
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write: the disk filled up part-way
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as exc:
            _cut_back(fd, before)
            raise io_error(exc, path) from None
    finally:
        os.close(fd)


def _cut_back(fd: int, size: int) -> None:
    """Drop what a failed append left after `size` (under the folder lock no one else appends)."""
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
    except OSError:
        pass  # the error being reported is the one that matters; the tail repair at open cuts the rest


def repair_tail(path: str | os.PathLike) -> None:
    """Drop a trailing line without newline (a write cut short by a crash). Called only by the
    holder of the folder lock, when it opens the folder — never while another writer appends."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1  # 0 when the only line is partial
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise io_error(exc, path) from None
    warnings.warn(f"{path}: removed a truncated last line ({size - keep} bytes) left by an interrupted write",
                  RuntimeWarning, stacklevel=3)


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write a whole file so readers see the old or the new content, never a mix."""
    write_together({Path(path): content})


def write_together(files: Mapping[Path, str | bytes]) -> None:
    """Write several whole files: each to a temp file beside it, and only when every one was
    written are they renamed into place. On any error nothing new is left behind."""
    temps: list[tuple[str, Path]] = []
    path = next(iter(files), Path("."))
    made = _missing_folders(Path(p).parent for p in files)  # removed again if nothing is written
    try:
        for path, content in files.items():
            path = Path(path)
            if path.is_dir():
                raise DynbenchError(f"{path} is a folder; give a file path")
            temps.append((_write_temp(path, content), path))
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as exc:
        _undo(temps, made)
        raise io_error(exc, Path(path)) from None
    except BaseException:
        _undo(temps, made)
        raise


def _write_temp(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE & ~_umask())  # as records.jsonl (O_CREAT 0644): the user's umask applies
        data = content.encode("utf-8") if isinstance(content, str) else content
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    return mask


def _missing_folders(folders) -> list[Path]:
    """Folders (and their missing parents) that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for folder in folders:
        for p in (folder, *folder.parents):
            if p.exists():
                break
            missing.add(p)
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _undo(temps: list[tuple[str, Path]], made: list[Path]) -> None:
    """Remove the temp files and the folders this write created (when still empty)."""
    for tmp, _ in temps:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()
