"""Timing and memory of torch callables: interleaved medians, the peak memory of a training step
(CUDA allocator, or on the CPU the profiler's memory timeline, else the resident set) and the bytes
autograd saves for backward."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from xnet.utils.memory import retention_paused


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Round-robin timing: every repeat runs every function once (seconds), so machine-load drift
    hits them all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def profiler_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak of (bytes allocated − bytes freed) while ``fn`` runs, from the profiler's memory
    timeline (CPU tensors; the analogue of CUDA ``max_memory_allocated − memory_allocated``).
    ``None`` if this torch lacks the (private) memory-timeline API."""
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action
    except ImportError:
        return None
    try:
        opts = dict(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True)
        # the profiler's records pin the heap: with memory kept, freed activations could not be reused
        with retention_paused(), profile(**opts) as prof:
            fn()
        timeline = prof._memory_profile().timeline
    except Exception:
        return None
    current = peak = 0
    for _t, action, _key, size in timeline:
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def rss_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Growth of the peak resident set while ``fn`` runs (``/proc``; Linux only; includes
    allocator slack)."""
    gc.collect()
    with retention_paused():  # RSS growth means live memory only with glibc's defaults
        base = _proc_kb("VmRSS")
        if base is None or not _reset_peak_rss():
            return None
        fn()
        peak = _proc_kb("VmHWM")
    return None if peak is None else (peak - base) * 1024


def step_peak_mb(step: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """``peak_MB`` of one ``step`` beyond what was allocated before it (``peak_source`` on the
    CPU: which measure gave it; tracemalloc does not see tensor memory)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return {"peak_MB": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
    peak, source = profiler_peak_bytes(step), "torch.profiler memory timeline"
    if peak is None:
        peak, source = rss_peak_bytes(step), "/proc VmHWM - VmRSS"
    return {"peak_source": source, "peak_MB": None if peak is None else peak / 2**20}


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward) and count the bytes of the distinct storages autograd saves for
    backward: the activation memory, exact and load-independent."""
    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[(s.data_ptr(), str(t.device))] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())
