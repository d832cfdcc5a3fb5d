"""One writer per run dir, and no run replaced by another.

:func:`run_dir_lock` holds an exclusive ``flock`` on ``<run dir>/.xnet.lock`` for a run's whole life:
a second process that starts into the same folder fails at once, naming the holder's pid. The
kernel drops the lock with its process, so a ``kill -9`` leaves no stale lock. :func:`held_run` says
what of a finished or interrupted run a folder holds; :func:`move_aside` moves it into
``replaced-<time>/`` inside the folder instead of writing over it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from xnet.protocol.errors import OutputError, UserError

__all__ = ["LOCK_NAME", "REPLACED_PREFIX", "RunDirBusy", "held_run", "move_aside", "run_dir_lock"]

LOCK_NAME = ".xnet.lock"
REPLACED_PREFIX = "replaced-"
#: what a run leaves in its folder (besides Hydra's .hydra/ and log, which every start writes)
RUN_FILES = ("checkpoints/*.ckpt", "metrics.json", "csv/metrics.csv")
#: kept in place when a run moves aside: the starting run's own files, and earlier replaced runs
KEPT = (".hydra", LOCK_NAME, "*.log", f"{REPLACED_PREFIX}*")


class RunDirBusy(UserError):
    """Another live process writes into this run dir."""


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
    return "unknown"


def _open_locked(path: Path) -> int:
    """An fd of ``path`` with the exclusive lock, retried while a previous holder removes the file
    between our open and our lock (the locked file must still be the one at ``path``)."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirBusy(
                f"hydra.run.dir={path.parent}: another xnet run is writing into it (pid {holder}); wait for it to end, "
                "or choose another hydra.run.dir"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_dir_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (:class:`RunDirBusy` if another process holds it)."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
    except OSError as e:
        raise OutputError(f"hydra.run.dir={folder}: cannot write into it ({e.strerror or e})") from e
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a waiter that opened it retries on the new file
        os.close(fd)


def held_run(folder: str | os.PathLike) -> list[str]:
    """The files of an earlier run in ``folder`` (relative names; empty: none)."""
    folder = Path(folder)
    return sorted({str(p.relative_to(folder)) for pattern in RUN_FILES for p in folder.glob(pattern) if p.is_file()})


def move_aside(folder: str | os.PathLike) -> Path:
    """Move the earlier run in ``folder`` — everything but :data:`KEPT` — into a new
    ``replaced-<time>`` folder inside it; returns that folder."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f"{REPLACED_PREFIX}{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"{REPLACED_PREFIX}{stamp}-{n}"
    try:
        dest.mkdir()
        for entry in sorted(folder.iterdir()):
            if entry != dest and not any(entry.match(pattern) for pattern in KEPT):
                entry.rename(dest / entry.name)
    except OSError as e:
        raise OutputError(f"{folder}: cannot move the earlier run aside into {dest} ({e.strerror or e})") from e
    return dest
