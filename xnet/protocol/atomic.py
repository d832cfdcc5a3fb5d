"""Atomic file writes: a results file is either the old one or the complete new one, never a stub.

Every writer (checkpoints, metrics.json, zoo files, exported weights, restored images) writes to a
temporary file *in the target's own folder* — a rename is only atomic within one filesystem, and
a temp dir elsewhere turns it into a copy that a kill can cut short — flushes it to the disk
(fsync), then renames it over the target. On any failure, a full disk included, the temporary
file is removed and the target is left as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator

from xnet.protocol.errors import OutputError

__all__ = ["atomic_path", "atomic_write", "write_json", "write_text", "OutputError"]


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (``torch.save``,
    PIL, safetensors, ONNX export); on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create the folder ({e.strerror or e})") from e
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:  # interrupted or failed: no stub left behind, the target untouched
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` once the block has completed."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes a whole file: mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, **dump_kwargs: Any) -> Path:
    """``data`` as indented JSON (non-JSON values as their ``str``)."""
    return write_text(path, json.dumps(data, indent=2, default=str, **dump_kwargs) + "\n")
