"""Atomic file writes: a results file is either the old one or the complete new one, never a stub.

Every writer (checkpoints, metrics.json, zoo files, exported weights, restored images) writes to a
temporary file *in the target's own folder* — a rename is only atomic within one filesystem, and
a temp dir elsewhere turns it into a copy that a kill can cut short — flushes it to the disk
(fsync), then renames it over the target. On any failure, a full disk included, the temporary
file is removed and the target is left as it was. With ``overwrite=False`` the finished file takes
its name with a hard link, which fails if the name exists: two writers racing for one name cannot
replace each other's file. A finished file has the mode any new file of the user's gets (their
umask), not a temporary file's 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from xnet.protocol.errors import OutputError

__all__ = ["OutputError", "atomic_path", "atomic_write", "remove_leftovers", "write_json", "write_text"]

TEMP_GLOB = ".*.tmp"  # what _temp_name makes


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status", encoding="ascii") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it back)
    os.umask(mask)
    return mask


def user_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give ``path`` the mode a new file (or folder) of the user's gets: 0666 (0777) less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: torch's zip writer reports a failed ``write`` (a full disk) as a
    RuntimeError whose context is the OSError."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and not isinstance(error, OutputError):  # an OutputError wraps the real one
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _temp_name(path: Path) -> Path:
    """Hidden, unique, beside ``path`` (and not ending in the target's suffix, so no glob of
    ``*.ckpt`` or ``*.png`` ever mistakes it for a finished file)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a folder, which is fine."""
    with contextlib.suppress(OSError):
        _fsync(folder)


def _take_name(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``path``; without ``overwrite``, link it there (an existing ``path``,
    however recent, is an error and stays as it is) and drop the temporary name."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some FUSE and FAT mounts): reserve the name, then fill it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            os.replace(tmp, path)
            return
    except FileExistsError:
        raise OutputError(
            f"{path}: already exists (written meanwhile by another process?); kept, not replaced"
        ) from None
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (``torch.save``,
    PIL, safetensors, ONNX export); on success it is fsynced and renamed onto ``path`` (see
    :func:`_take_name` for ``overwrite=False``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create the folder ({e.strerror or e})") from e
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        user_mode(tmp)
        _take_name(tmp, path, overwrite)
    except BaseException as e:  # interrupted or failed: no stub left behind, the target untouched
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = os_error_in(e)
        if cause is not None and not isinstance(e, OutputError):
            raise OutputError(f"{path}: cannot write ({cause.strerror or cause})") from e
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", overwrite: bool = True, **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` once the block has completed."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes a whole file: mode must start with 'w', got {mode!r}")
    with atomic_path(path, overwrite) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (call it only where no
    other process writes: a run dir whose lock this process holds). Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(TEMP_GLOB):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, **dump_kwargs: Any) -> Path:
    """``data`` as indented JSON (non-JSON values as their ``str``)."""
    return write_text(path, json.dumps(data, indent=2, default=str, **dump_kwargs) + "\n")
