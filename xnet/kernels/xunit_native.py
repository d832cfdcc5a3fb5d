"""One-pass native CPU kernel for a fused xUnit (NHWC float32, C % 16 == 0).

:data:`NATIVE_SOURCE` (``csrc/xunit_cpu.cpp``) is C++ compiled on first use with the system C++ compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``; ``-O3 -march=native``) into ``$XNET_CACHE_DIR`` (default
``~/.cache/xnet``; the file name hashes the source, compiler, flags and CPU flags), loaded with
ctypes and checked once against :func:`xnet.kernels.xunit_gate.fused_xunit_reference`.
:func:`native_kernel` returns the loaded library, or ``None`` if any step fails (one warning) or
``XNET_NATIVE=0``; callers then use the torch ops (:mod:`xnet.kernels.xunit_gate`).

The kernel works on one 16-channel block at a time (a block is one 64-byte cache line per pixel
of an NHWC row): per output row it keeps that block's ``r`` rows of ``u = ReLU(x·in_scale +
in_shift)`` in a ring buffer small enough for L2, does the depthwise conv with 16-pixel register
blocks (each loaded ``u`` vector feeds up to ``r`` FMAs) and applies the gate, ``out_scale``/
``out_shift`` and the multiply straight from the accumulators — so ``x`` is read from memory once
and ``y`` written once, in place when allowed. Rows are taken in chunks of 8 with the channel blocks
inside, so a chunk's ``x`` rows are still cached for the later blocks. :func:`fused_xunit_native`
splits the work over ``torch.get_num_threads()`` threads: first into channel groups (free: a block
is its own cache line, nothing is recomputed), then, with more threads than blocks, into row bands
whose boundary rows of ``u`` are computed first (in parallel), so bands may overwrite their own rows
of ``x``. The tasks run on OpenMP — the same runtime (``libgomp.so.1``) and thread team as torch's
convolutions, so no thread waits for torch's spinning workers (with Python threads the xUnit did not
scale at all from 1 to 2 threads inside a model; on OpenMP it does: ``results/benchmark_cpu_threads.json``,
the README's "Speed and memory"). Without an OpenMP-capable compiler it builds without and runs the
tasks on Python threads.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xnet.kernels.gate import GATES
from xnet.kernels.xunit_gate import FusedTerms, fused_xunit_reference

__all__ = [
    "depthwise_conv_native",
    "depthwise_grad_weight_native",
    "fused_xunit_native",
    "native_kernel",
]

#: the kernel's C++ source (package data beside this module)
NATIVE_SOURCE = Path(__file__).with_name("csrc") / "xunit_cpu.cpp"


_GATE_CODES = {name: i for i, name in enumerate(GATES)}  # passed to the C++ enum at build time
_CONV_ONLY = len(GATES)  # the C++ enum's CONV_ONLY: the kernel writes d itself
_native_state: dict[str, Any] = {}
_native_lock = threading.Lock()
_pool_state: dict[str, Any] = {}


class _HaloTask(ctypes.Structure):
    """The C++ ``HaloTask`` (same field order)."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("r_begin", ctypes.c_int64),
        ("r_end", ctypes.c_int64),
    ]


class _BandTask(ctypes.Structure):
    """The C++ ``BandTask`` (same field order)."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("s", ctypes.c_int64),
        ("e", ctypes.c_int64),
        ("halo_top", ctypes.c_void_p),
        ("halo_bottom", ctypes.c_void_p),
        ("c_begin", ctypes.c_int64),
        ("c_end", ctypes.c_int64),
    ]


class _GradTask(ctypes.Structure):
    """The C++ ``GradTask`` (same field order)."""

    _fields_ = [
        ("u", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("gw", ctypes.c_void_p),
        ("s", ctypes.c_int64),
        ("e", ctypes.c_int64),
    ]


class _NativeParams(ctypes.Structure):
    """The C++ ``Params`` struct (same field order)."""

    _fields_ = [
        ("H", ctypes.c_int64),
        ("W", ctypes.c_int64),
        ("C", ctypes.c_int64),
        ("R", ctypes.c_int64),
        ("in_scale", ctypes.c_void_p),
        ("in_shift", ctypes.c_void_p),
        ("relu", ctypes.c_int64),
        ("wt", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("gate", ctypes.c_int64),
        ("out_scale", ctypes.c_void_p),
        ("out_shift", ctypes.c_void_p),
    ]


#: the kernel is built with -march=native: its cache key includes this OS file's instruction-set
#: flags, so a cache shared between machines never hands one CPU another's binary (SIGILL)
_CPU_FLAGS_FILE = Path("/proc/cpuinfo")


def _cpu_signature() -> str:
    try:
        with _CPU_FLAGS_FILE.open() as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _build_native() -> ctypes.CDLL:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set $CXX)")
    gates = [f"-DXUNIT_GATE_{name.upper()}={code}" for name, code in _GATE_CODES.items()]
    base = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", *gates, f"-DXUNIT_GATE_CONV_ONLY={_CONV_ONLY}"]
    try:  # OpenMP: the runtime torch already loaded (libgomp.so.1) runs the parallel passes
        return _compile(cxx, [*base, "-fopenmp"])
    except RuntimeError as exc:
        warnings.warn(f"xUnit CPU kernel without OpenMP ({str(exc)[:200]}); Python threads instead", stacklevel=4)
        return _compile(cxx, base)


def _compile(cxx: str, flags: list[str]) -> ctypes.CDLL:
    source = NATIVE_SOURCE.read_text()
    key = hashlib.sha256("\0".join([source, cxx, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XNET_CACHE_DIR") or Path.home() / ".cache" / "xnet")
    lib_path = cache / f"xunit_cpu_{key}.so"
    if not lib_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            out = Path(tmp) / lib_path.name
            proc = subprocess.run(
                [cxx, *flags, str(NATIVE_SOURCE), "-o", str(out)], capture_output=True, text=True, timeout=300
            )
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the xUnit CPU kernel failed: {proc.stderr[-2000:]}")
            os.replace(out, lib_path)  # atomic: concurrent builders race harmlessly
    lib = ctypes.CDLL(str(lib_path))
    lib.xunit_padded_row_floats.argtypes = [ctypes.c_int64] * 3
    lib.xunit_padded_row_floats.restype = ctypes.c_int64
    lib.xunit_u_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.xunit_u_rows.restype = None
    lib.xunit_band.argtypes = (
        [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
    )
    lib.xunit_band.restype = ctypes.c_int
    lib.xunit_dw_grad_weight.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
    lib.xunit_dw_grad_weight.restype = None
    lib.xunit_has_openmp.argtypes, lib.xunit_has_openmp.restype = [], ctypes.c_int
    lib.xunit_halos.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.xunit_halos.restype = None
    lib.xunit_bands.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.xunit_bands.restype = ctypes.c_int
    lib.xunit_dw_grad_weight_tasks.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.xunit_dw_grad_weight_tasks.restype = None
    return lib


def _native_self_check(lib: ctypes.CDLL) -> float:
    """Max |native − torch ops| over every gate and optional term on a small problem, and of the
    depthwise conv / weight gradient (relative to the largest gradient) against torch's."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for gate_kind, k, pre, post in itertools.product(GATES, (3, 9), (True, False), (True, False)):
        c = 32  # two channel blocks
        terms = FusedTerms(
            k,
            gate_kind,
            relu=pre,
            in_scale=torch.rand(c, generator=g) + 0.5 if pre else None,
            in_shift=torch.randn(c, generator=g) if pre else None,
            dw_weight=torch.randn(c, 1, k, k, generator=g) * 0.2,
            dw_bias=torch.randn(c, generator=g) * 0.1 if pre else None,
            out_scale=torch.rand(c, generator=g) + 0.5 if post else None,
            out_shift=torch.randn(c, generator=g) if post else None,
        )
        # 37 rows in 2 bands: several row chunks per band; odd width: a partial pixel block
        x = torch.randn(2, c, 37, 21, generator=g).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = fused_xunit_reference(x, terms)
            got = fused_xunit_native(
                x, terms, lib, inplace=post, workers=2 + pre
            )  # 2: channel groups; 3: row bands too
            worst = max(worst, (got - expected).abs().max().item())
    # conv-only mode and the weight gradient, against torch's depthwise conv and its backward
    for k in (3, 9):
        u = torch.randn(2, 32, 19, 11, generator=g).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(32, 1, k, k, generator=g), torch.randn(32, generator=g)
        gd = torch.randn(2, 32, 19, 11, generator=g).contiguous(memory_format=torch.channels_last)
        ref_gw = torch.ops.aten.convolution_backward(
            gd, u, w, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 32, [False, True, False]
        )[1]
        d = depthwise_conv_native(u, w, b, lib, workers=3)
        gw = depthwise_grad_weight_native(u, gd, k, lib, workers=2)
        worst = max(worst, (d - F.conv2d(u, w, b, padding=k // 2, groups=32)).abs().max().item())
        worst = max(worst, (gw - ref_gw).abs().max().item() / max(1.0, ref_gw.abs().max().item()))
    return worst


def native_kernel() -> ctypes.CDLL | None:
    """The compiled CPU kernel, or ``None`` (no compiler, build failure, failed self-check, or
    ``XNET_NATIVE=0``). Built and checked once per process; failures warn once."""
    if "lib" in _native_state:
        return _native_state["lib"]
    with _native_lock:
        if "lib" in _native_state:
            return _native_state["lib"]
        lib = None
        if os.environ.get("XNET_NATIVE", "1") not in {"0", "false", "no"}:
            try:
                candidate = _build_native()
                err = _native_self_check(candidate)
                if not err <= 1e-4:
                    raise RuntimeError(f"self-check mismatch {err:.3g}")
                lib = candidate
            except Exception as exc:
                warnings.warn(f"xUnit CPU kernel unavailable ({exc}); using torch ops", stacklevel=3)
        _native_state["lib"] = lib
        return lib


def _thread_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool with at least ``workers`` threads (replaced by a larger one on demand)."""
    pool = _pool_state.get("pool")
    if pool is None or _pool_state.get("workers", 0) < workers:
        if pool is not None:
            pool.shutdown(wait=False)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xunit")
        _pool_state.update(pool=pool, workers=workers)
    return pool


def _ptr(v: torch.Tensor | None) -> int | None:
    return None if v is None else v.data_ptr()


def _row_bands(height: int, bands: int) -> list[int]:
    """Band start rows (plus ``height``): ``bands`` bands, at most one per 8 rows."""
    bands = max(1, min(bands, height // 8))
    return [height * b // bands for b in range(bands)] + [height]


def _split(height: int, blocks: int, radius: int, workers: int | None) -> tuple[int, int]:
    """``(channel groups, row bands)`` for ``workers`` threads (default ``torch.get_num_threads()``).

    Channel groups (whole 16-channel blocks, a divisor of ``blocks``) cost nothing extra: no thread
    touches another's cache lines. Row bands cost ``2·radius`` recomputed rows of ``u`` each (their
    halos). The split minimises (rounds of tasks) × (work per task, halos included)."""
    workers = max(1, workers or torch.get_num_threads())
    best, best_cost = (1, 1), float("inf")
    for groups in (g for g in range(1, blocks + 1) if blocks % g == 0 and g <= workers):
        for bands in range(1, max(1, min(workers, height // 8)) + 1):
            tasks = groups * bands
            rounds = -(-tasks // workers)
            cost = rounds * (height / bands + 2 * radius * (bands > 1)) / groups
            if cost < best_cost - 1e-9:
                best, best_cost = (groups, bands), cost
    return best


def _run_tasks(fn: Any, tasks: list[tuple], workers: int) -> list[Any]:
    return (
        [fn(task) for task in tasks] if workers == 1 or len(tasks) == 1 else list(_thread_pool(workers).map(fn, tasks))
    )


def _band_pass(x: torch.Tensor, y: torch.Tensor, params: _NativeParams, lib: ctypes.CDLL, workers: int | None) -> None:
    """Run ``xunit_band`` over every image of ``x`` (NHWC float32) into ``y`` on ``workers``
    threads: channel groups × row bands (:func:`_split`). With several bands, the ``u`` rows around
    each band boundary are computed first, in parallel, from ``x`` before any band overwrites it
    (so ``y`` may be ``x``)."""
    n, c, height, width = x.shape
    p = params.R // 2
    threads = max(1, workers or torch.get_num_threads())
    groups, bands = _split(height, c // 16, p, threads)
    starts = _row_bands(height, bands)
    edges = [c * g // groups // 16 * 16 for g in range(groups)] + [c]
    prow = lib.xunit_padded_row_floats(width, c, params.R)
    block_row_bytes = prow // c * 16 * x.element_size()  # one padded u row of one 16-channel block
    image = height * width * c * x.element_size()
    halos = {(i, b): torch.zeros(2 * p, prow) for i in range(n) for b in range(len(starts) - 2)} if p else {}
    halo_tasks = [
        (x.data_ptr() + i * image, buf.data_ptr(), starts[b + 1] - p, starts[b + 1] + p)
        for (i, b), buf in halos.items()
    ]
    openmp = bool(lib.xunit_has_openmp())
    if openmp:
        lib.xunit_halos((_HaloTask * len(halo_tasks))(*halo_tasks), len(halo_tasks), threads, ctypes.byref(params))
    else:
        _run_tasks(lambda t: lib.xunit_u_rows(*t, ctypes.byref(params)), halo_tasks, threads)
    tasks = []
    for i in range(n):
        xi, yi = x.data_ptr() + i * image, y.data_ptr() + i * image
        for b in range(len(starts) - 1):
            top = halos[(i, b - 1)].data_ptr() if p and b > 0 else None
            # rows [e, e + P) start P rows into the buffer (in each of its channel blocks)
            bottom = halos[(i, b)].data_ptr() + p * block_row_bytes if p and b < len(starts) - 2 else None
            tasks += [(xi, yi, starts[b], starts[b + 1], top, bottom, edges[g], edges[g + 1]) for g in range(groups)]

    if openmp:
        failed = lib.xunit_bands((_BandTask * len(tasks))(*tasks), len(tasks), threads, ctypes.byref(params))
    else:
        failed = any(_run_tasks(lambda t: lib.xunit_band(*t, ctypes.byref(params)), tasks, threads))
    if failed:
        raise MemoryError("xUnit CPU kernel could not allocate its row buffers")


def _taps_last(weight: torch.Tensor) -> torch.Tensor:
    """Depthwise weight ``(C, 1, k, k)`` as the kernel's ``[ky][kx][c]`` float32 layout."""
    c, _, k, _ = weight.shape
    return weight.detach().reshape(c, k, k).permute(1, 2, 0).contiguous().float()


def fused_xunit_native(
    x: torch.Tensor,
    t: FusedTerms,
    lib: ctypes.CDLL,
    inplace: bool = False,
    workers: int | None = None,
) -> torch.Tensor:
    """One fused xUnit forward with the native kernel ``lib`` (from :func:`native_kernel`); the
    caller chose it (:mod:`xnet.kernels.dispatch`). With ``inplace`` the output overwrites ``x``. ``workers``:
    threads (default ``torch.get_num_threads()``), over channel groups and row bands."""
    _n, c, height, width = x.shape
    optional = (t.in_scale, t.in_shift, t.out_scale, t.out_shift)
    in_scale, in_shift, out_scale, out_shift = (None if v is None else v.contiguous() for v in optional)
    wt = _taps_last(t.dw_weight)
    bias = t.dw_bias.contiguous() if t.dw_bias is not None else torch.zeros(c)
    params = _NativeParams(
        height,
        width,
        c,
        t.kernel_size,
        _ptr(in_scale),
        _ptr(in_shift),
        int(t.relu),
        wt.data_ptr(),
        bias.data_ptr(),
        _GATE_CODES[t.gate],
        _ptr(out_scale),
        _ptr(out_shift),
    )
    y = x if inplace else torch.empty_like(x)
    _band_pass(x, y, params, lib, workers)
    return y


def depthwise_conv_native(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lib: ctypes.CDLL, workers: int | None = None
) -> torch.Tensor:
    """``F.conv2d(u, weight, bias, padding=k // 2, groups=C)`` for NHWC float32 ``u`` (C % 16 == 0,
    odd k) with the native kernel; the output is channels_last."""
    _n, c, height, width = u.shape
    k = weight.shape[-1]
    wt = _taps_last(weight)
    b = bias.detach().contiguous().float() if bias is not None else torch.zeros(c)
    params = _NativeParams(height, width, c, k, None, None, 0, wt.data_ptr(), b.data_ptr(), _CONV_ONLY, None, None)
    d = torch.empty_like(u, memory_format=torch.channels_last)
    _band_pass(u, d, params, lib, workers)
    return d


def depthwise_grad_weight_native(
    u: torch.Tensor, grad: torch.Tensor, kernel_size: int, lib: ctypes.CDLL, workers: int | None = None
) -> torch.Tensor:
    """Weight gradient ``(C, 1, k, k)`` of ``conv2d(u, w, padding=k // 2, groups=C)`` given the
    output gradient ``grad``; both NHWC float32 of one shape, C % 16 == 0."""
    n, c, height, width = u.shape
    k = kernel_size
    params = _NativeParams(height, width, c, k, None, None, 0, None, None, _CONV_ONLY, None, None)
    starts = _row_bands(height, workers or torch.get_num_threads())
    image = height * width * c * u.element_size()
    bands = len(starts) - 1
    partial = torch.zeros(n, bands, k * k * c)  # one accumulator per image and band
    tasks = [
        (u.data_ptr() + i * image, grad.data_ptr() + i * image, partial[i, b].data_ptr(), starts[b], starts[b + 1])
        for i in range(n)
        for b in range(bands)
    ]
    if lib.xunit_has_openmp():
        lib.xunit_dw_grad_weight_tasks((_GradTask * len(tasks))(*tasks), len(tasks), bands, ctypes.byref(params))
    else:
        _run_tasks(lambda t: lib.xunit_dw_grad_weight(*t, ctypes.byref(params)), tasks, bands)
    partial = partial.view(-1, k * k * c)
    return partial.sum(0).view(k, k, c).permute(2, 0, 1).unsqueeze(1).contiguous()
