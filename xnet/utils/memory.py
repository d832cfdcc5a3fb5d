"""Keep freed CPU memory in the process instead of handing it back to the OS.

PyTorch's CPU allocator is plain ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and unmaps it on free, so a training step at batch 64 × 80²
— activations of 105 MB each, gigabytes per step — page-faults (and zeroes) all of its memory
again on every step (what that cost on this project's CPU machine: the README's "Speed and memory",
CPU memory).

:func:`retain_freed_memory` tells glibc never to ``mmap`` a block and never to trim the heap, so
freed blocks are reused from the next step on. The cost: the process keeps its peak footprint
until it exits (or calls :func:`release_freed_memory`) — right for training and evaluation runs,
whose steps repeat one allocation pattern (RSS settles within a few steps, ~10% above the live
peak). A process that moves between unlike workloads (the benchmark: several models, inference and
training) should call :func:`release_freed_memory` between them, or fragmentation accumulates.
Called by the entry points (``retain_cpu_memory: true`` in the configs); a no-op where the C
library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import platform
from collections.abc import Iterator

__all__ = ["release_freed_memory", "retain_freed_memory", "retention_paused"]

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_state: dict[str, bool] = {}


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as exc:
        log.debug("libc unavailable: %s", exc)
        return None


def retain_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (idempotent). Returns whether it applies."""
    if "applied" in _state:
        return _state["applied"]
    libc = _libc()
    # mallopt takes an int; -1 as the trim threshold is SIZE_MAX to glibc: never trim
    applied = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    _state["applied"] = applied
    return applied


def release_freed_memory() -> bool:
    """Hand the free pages of the heap back to the OS now (``malloc_trim``). Returns whether any
    memory was released."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


@contextlib.contextmanager
def retention_paused() -> Iterator[None]:
    """glibc's default behaviour inside the block (memory kept so far is released first). For
    code that interleaves many small long-lived allocations with large ones — e.g. a profiled
    step, whose records pin the heap so that freed large blocks cannot be coalesced and reused."""
    libc = _libc() if _state.get("applied") else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, -1)
