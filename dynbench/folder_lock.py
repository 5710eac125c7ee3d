"""One writer per results folder: an advisory lock held for a command's whole lifetime.

`run`, `merge` and each shard job hold `DIR/.dynbench.lock` (`fcntl.flock`, exclusive) while
they write DIR. A second writer refuses at once with one line naming the holder (pid, host,
command, since when) and the fix. The kernel drops a flock when its holder dies (even by
SIGKILL), so a lock left by a dead process is simply taken over; the file's content is only the
holder's description. The holder repairs a torn last line of `records.jsonl` when it takes the
lock — never later, when it could cut a line another writer is writing.

The lock is re-entrant within a process (`run --executor` holds DIR and merges into it). A shard
job started by `run --executor` watches its parent's lock (`watch_parent`): when the parent is
gone (killed, even by SIGKILL) the job ends itself, so no orphan keeps writing a shard folder.
flock works on local filesystems and on NFS ≥ v4 (Linux emulates it with byte-range locks).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from dynbench.errors import DynbenchError
from dynbench.safe_io import FILE_MODE, io_error, repair_tail

LOCK_FILE = ".dynbench.lock"
RECORDS_FILE = "records.jsonl"  # results.RECORDS_FILE (results imports this module)
PARENT_LOCK_ENV = "DYNBENCH_PARENT_LOCK"  # set for shard jobs: "<lock path>\t<token>"
POLL_S = 0.5
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
BRIEF_WAIT_S = 60.0  # an unnamed holder appends one row: wait for it rather than refuse


class FolderBusy(DynbenchError):
    """Another live process writes this folder."""


_held: dict[Path, list] = {}  # resolved folder -> [fd, depth, token]
_guard = threading.Lock()


def holder(folder: str | os.PathLike) -> dict | None:
    """What the lock file says about its (last) holder, or None."""
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    alive = _pid_alive(info.get("pid"))
    who = f"pid {info.get('pid')} on {info.get('host')}"
    if not alive and info.get("host") == socket.gethostname():
        who += " (exited; a child process it started still holds the lock)"
    return f"{who} (`{info.get('command')}`, since {info.get('since')})"


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _acquire(folder: Path, wait_s: float) -> int:
    """The locked descriptor. A holder that names itself (a run, a merge) is waited for `wait_s`;
    one that does not (a brief append, or a holder between taking the lock and naming itself)
    up to BRIEF_WAIT_S, as it lets go within milliseconds."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise io_error(exc, path) from None
    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno in NO_LOCKS:  # a filesystem without locks: write, unprotected, and say so
                warnings.warn(f"{folder}: the filesystem does not support file locks ({exc.strerror}); do not "
                              "point two dynbench commands at this folder at once", RuntimeWarning, stacklevel=4)
                return fd
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise io_error(exc, path) from None
        info = holder(folder)
        if time.monotonic() - start >= (wait_s if info else max(wait_s, BRIEF_WAIT_S)):
            os.close(fd)
            raise FolderBusy(f"{folder} is being written by {_describe(info)}: wait for it to finish "
                             "or stop it, or choose another --out (one writer per results folder)")
        time.sleep(0.01 if not info else 0.05)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait_s: float = 1.0, brief: bool = False) -> Iterator[str]:
    """Hold the folder's writer lock (module docstring); yields the holder's token. `wait_s`: how
    long to wait for a named holder that is about to let go (a shard job of a killed parent).
    `brief`: held for one append, unnamed — others wait for it instead of refusing."""
    folder = Path(folder).resolve()
    with _guard:
        entry = _held.get(folder)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield entry[2]
        finally:
            with _guard:
                entry[1] -= 1
        return
    fd = _acquire(folder, wait_s)
    token = uuid.uuid4().hex
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                "command": shlex.join(["dynbench", *sys.argv[1:]]),
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            if not brief:
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:
            raise io_error(exc, folder / LOCK_FILE) from None
        repair_tail(folder / RECORDS_FILE)  # under the lock, at open: no one else is appending
        with _guard:
            _held[folder] = [fd, 1, token]
        yield token
    finally:
        with _guard:
            _held.pop(folder, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no holder any more: a shard job watching this lock stops
        os.close(fd)  # releases the flock


def wait_free(folders, timeout_s: float) -> bool:
    """Wait until no process holds any of `folders`' locks (True), or `timeout_s` passed (False)."""
    deadline = time.monotonic() + timeout_s
    for folder in folders:
        path = Path(folder) / LOCK_FILE
        while path.exists():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break  # free (closing the fd releases our look)
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
            finally:
                os.close(fd)
    return True


def holds(folder: str | os.PathLike) -> bool:
    """Whether this process holds `folder`'s lock."""
    return Path(folder).resolve() in _held


def parent_env(folder: str | os.PathLike, token: str) -> dict[str, str]:
    """The variable that lets a shard job watch the lock its parent holds (`watch_parent`)."""
    return {PARENT_LOCK_ENV: f"{Path(folder).resolve() / LOCK_FILE}\t{token}"}


def parent_gone(lock_path: str, token: str) -> bool:
    """Whether the process that held `lock_path` with `token` is gone: the lock file names
    another holder now, or that holder's pid no longer runs."""
    try:
        info = json.loads(Path(lock_path).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return True
    if not isinstance(info, dict) or info.get("token") != token:
        return True
    if info.get("host") != socket.gethostname():  # another machine's pid says nothing here
        return False
    return not _pid_alive(info.get("pid"))


def watch_parent(environ: dict | None = None) -> threading.Thread | None:
    """In a shard job: end this process (SIGTERM to its process group) once the parent that
    started it is gone. No-op outside a job. A row being appended is one write: whole or absent."""
    value = (os.environ if environ is None else environ).get(PARENT_LOCK_ENV)
    if not value or "\t" not in value:
        return None
    lock_path, token = value.split("\t", 1)

    def watch() -> None:
        while not parent_gone(lock_path, token):
            time.sleep(POLL_S)
        print(f"dynbench: the run that started this shard job is gone ({Path(lock_path).parent}); stopping",
              file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            os.killpg(os.getpgrp(), signal.SIGTERM) if os.getpgrp() == os.getpid() else None
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="dynbench-parent-watch", daemon=True)
    thread.start()
    return thread
