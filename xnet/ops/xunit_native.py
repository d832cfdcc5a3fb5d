"""One-pass native CPU kernel for a fused xUnit (NHWC float32, C % 16 == 0).

:data:`_NATIVE_SOURCE` is C++ compiled on first use with the system C++ compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``; ``-O3 -march=native``) into ``$XNET_CACHE_DIR`` (default
``~/.cache/xnet``; the file name hashes the source, compiler, flags and CPU flags), loaded with
ctypes and checked once against :func:`xnet.ops.xunit_gate.fused_xunit_reference`.
:func:`native_kernel` returns the loaded library, or ``None`` if any step fails (one warning) or
``XNET_NATIVE=0``; callers then use the torch ops (:mod:`xnet.ops.xunit_gate`).

Per output row the kernel keeps the ``r`` rows of ``u = ReLU(x·in_scale + in_shift)`` in a ring
buffer, does the depthwise conv with 16-pixel × 16-channel register blocks (each loaded ``u``
vector feeds up to ``r`` FMAs), then gate, ``out_scale``/``out_shift`` and the multiply — so ``x``
is read once and ``y`` written once, in place when allowed. :func:`fused_xunit_native` splits the
rows into bands run on Python threads (ctypes drops the GIL); the ``r//2`` rows of ``u`` around
each band boundary are computed first, so bands may overwrite their own rows of ``x``.
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

from xnet.archs.xunit import GATES
from xnet.ops.xunit_gate import FusedTerms, fused_xunit_reference

__all__ = ["fused_xunit_native", "native_applies", "native_kernel"]

_NATIVE_SOURCE = r"""
// xUnit inference kernel, NHWC float32, C % 16 == 0.
// y = x * gate(DW_r(ReLU(x*s + t)) + b) * os + ot, one pass over x per band of rows.
#include <cstdint>
#include <cstdlib>
#include <cstring>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

static inline v16 ld(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
static inline void st(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
static inline v16 splat(float f) { return v16{} + f; }

static inline v16 vexp(v16 a) {
    const v16 lo = splat(-87.0f), hi = splat(88.0f);
    a = a < lo ? lo : a;
    a = a > hi ? hi : a;
    v16 n = a * 1.44269504088896341f;
    const v16 magic = splat(12582912.0f);  // 1.5 * 2^23: round to nearest
    n = (n + magic) - magic;
    v16 r = a - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    v16 p = splat(1.0f / 5040.0f);
    p = p * r + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi16 ni = __builtin_convertvector(n, vi16);
    vi16 bits = (ni + 127) << 23;
    v16 scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

enum { GAUSSIAN = 0, SIGMOID = 1, TANH = 2, IDENTITY = 3 };

static inline v16 vgate(v16 d, int kind) {
    switch (kind) {
        case GAUSSIAN: return vexp(-(d * d));
        case SIGMOID: return 1.0f / (1.0f + vexp(-d));
        case TANH: return 1.0f - 2.0f / (vexp(d + d) + 1.0f);
        default: return d;
    }
}

struct Params {
    int64_t H, W, C, R;            // image height/width, channels, kernel size
    const float* in_scale;          // C or null
    const float* in_shift;          // C or null
    int64_t relu;
    const float* wt;                // R*R*C, [ky][kx][c]
    const float* bias;              // C (zeros if none)
    int64_t gate;
    const float* out_scale;         // C or null
    const float* out_shift;         // C or null
};

enum { BLK = 16 };  // output pixels per register block

// padded row layout: P zero columns, W data columns, P + BLK zero columns; times C floats
static inline int64_t padded_width(const Params& q) { return q.W + 2 * (q.R / 2) + BLK; }

// u row (padded) from x row
static void make_u_row(const Params& q, const float* xrow, float* urow) {
    const int64_t C = q.C, P = q.R / 2;
    float* dst = urow + P * C;
    for (int64_t w = 0; w < q.W; ++w) {
        for (int64_t c = 0; c < C; c += 16) {
            v16 v = ld(xrow + w * C + c);
            if (q.in_scale) v = v * ld(q.in_scale + c) + ld(q.in_shift + c);
            if (q.relu) v = v < 0.0f ? splat(0.0f) : v;
            st(dst + w * C + c, v);
        }
    }
}

template <int R>
static void conv_row_t(const Params& q, const float* const* urows, float* drow) {
    constexpr int P = R / 2;
    const int64_t C = q.C, W = q.W;
    for (int64_t c = 0; c < C; c += 16) {
        const v16 b = ld(q.bias + c);
        for (int64_t x0 = 0; x0 < W; x0 += BLK) {
            v16 acc[BLK];
#pragma GCC unroll 16
            for (int i = 0; i < BLK; ++i) acc[i] = b;
            for (int ky = 0; ky < R; ++ky) {
                const float* u = urows[ky] + x0 * C + c;  // column x0 - P + j lives at (x0 + j) in padded layout
                v16 w[R];
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) w[kx] = ld(q.wt + (ky * R + kx) * C + c);
#pragma GCC unroll 32
                for (int j = 0; j < BLK + R - 1; ++j) {
                    const v16 uv = ld(u + j * C);
#pragma GCC unroll 16
                    for (int kx = 0; kx < R; ++kx) {
                        const int i = j - kx;
                        if (i >= 0 && i < BLK) acc[i] += w[kx] * uv;
                    }
                }
            }
#pragma GCC unroll 16
            for (int i = 0; i < BLK; ++i) st(drow + (x0 + i) * C + c, acc[i]);
        }
    }
    (void)P;
}

static void conv_row_generic(const Params& q, const float* const* urows, float* drow) {
    const int64_t C = q.C, W = q.W, R = q.R;
    for (int64_t x = 0; x < W; ++x) {
        for (int64_t c = 0; c < C; c += 16) {
            v16 acc = ld(q.bias + c);
            for (int64_t ky = 0; ky < R; ++ky)
                for (int64_t kx = 0; kx < R; ++kx)
                    acc += ld(q.wt + (ky * R + kx) * C + c) * ld(urows[ky] + (x + kx) * C + c);
            st(drow + x * C + c, acc);
        }
    }
}

static void conv_row(const Params& q, const float* const* urows, float* drow) {
    switch (q.R) {
        case 1: conv_row_t<1>(q, urows, drow); break;
        case 3: conv_row_t<3>(q, urows, drow); break;
        case 5: conv_row_t<5>(q, urows, drow); break;
        case 7: conv_row_t<7>(q, urows, drow); break;
        case 9: conv_row_t<9>(q, urows, drow); break;
        default: conv_row_generic(q, urows, drow);
    }
}

static void gate_row(const Params& q, const float* drow, const float* xrow, float* yrow) {
    const int64_t C = q.C;
    for (int64_t w = 0; w < q.W; ++w) {
        for (int64_t c = 0; c < C; c += 16) {
            v16 g = vgate(ld(drow + w * C + c), (int)q.gate);
            if (q.out_scale) g *= ld(q.out_scale + c);
            v16 y = ld(xrow + w * C + c) * g;
            if (q.out_shift) y += ld(q.out_shift + c);
            st(yrow + w * C + c, y);
        }
    }
}

extern "C" {

int64_t xunit_padded_row_floats(int64_t W, int64_t C, int64_t R) {
    Params q{};
    q.W = W; q.C = C; q.R = R;
    return padded_width(q) * C;
}

// u rows [r_begin, r_end) of image x (rows outside [0, H) are left zero) into `out`
// (r_end - r_begin padded rows, zero-initialised by the caller).
void xunit_u_rows(const float* x, float* out, int64_t r_begin, int64_t r_end, const Params* q) {
    const int64_t row = q->W * q->C, prow = padded_width(*q) * q->C;
    for (int64_t j = r_begin; j < r_end; ++j)
        if (j >= 0 && j < q->H) make_u_row(*q, x + j * row, out + (j - r_begin) * prow);
}

// Output rows [s, e) of one image. u rows [s - P, s) come from `halo_top` (P padded rows) and
// [e, e + P) from `halo_bottom`, unless they lie outside the image (then zero) or s == 0 /
// e == H. y may alias x: row i of y is written only after every u row that reads x row i.
int xunit_band(const float* x, float* y, int64_t s, int64_t e, const float* halo_top, const float* halo_bottom,
               const Params* qp) {
    const Params& q = *qp;
    const int64_t R = q.R, P = R / 2, row = q.W * q.C, prow = padded_width(q) * q.C;
    float* ring = static_cast<float*>(std::calloc((size_t)(R * prow + prow + prow), sizeof(float)));
    if (!ring) return 1;
    float* zero = ring + R * prow;  // stays zero
    float* drow = zero + prow;
    const float** urows = static_cast<const float**>(std::malloc(sizeof(float*) * (size_t)R));
    if (!urows) { std::free(ring); return 1; }
    int64_t next = s;  // next own u row to compute
    for (int64_t i = s; i < e; ++i) {
        const int64_t need = i + P < e ? i + P : e - 1;
        for (; next <= need; ++next) make_u_row(q, x + next * row, ring + (next % R) * prow);
        for (int64_t ky = 0; ky < R; ++ky) {
            const int64_t j = i - P + ky;
            if (j < 0 || j >= q.H) urows[ky] = zero;
            else if (j < s) urows[ky] = halo_top + (j - (s - P)) * prow;
            else if (j >= e) urows[ky] = halo_bottom + (j - e) * prow;
            else urows[ky] = ring + (j % R) * prow;
        }
        conv_row(q, urows, drow);
        gate_row(q, drow, x + i * row, y + i * row);
    }
    std::free(urows);
    std::free(ring);
    return 0;
}

}  // extern "C"
"""


_GATE_CODES = {"gaussian": 0, "sigmoid": 1, "tanh": 2, "identity": 3}  # the C++ enum
_native_state: dict[str, Any] = {}
_native_lock = threading.Lock()
_pool_state: dict[str, Any] = {}


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


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
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
    flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
    key = hashlib.sha256("\0".join([_NATIVE_SOURCE, cxx, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XNET_CACHE_DIR") or Path.home() / ".cache" / "xnet")
    lib_path = cache / f"xunit_cpu_{key}.so"
    if not lib_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src = Path(tmp) / "xunit_cpu.cpp"
            src.write_text(_NATIVE_SOURCE)
            out = Path(tmp) / lib_path.name
            proc = subprocess.run([cxx, *flags, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the xUnit CPU kernel failed: {proc.stderr[-2000:]}")
            os.replace(out, lib_path)  # atomic: concurrent builders race harmlessly
    lib = ctypes.CDLL(str(lib_path))
    lib.xunit_padded_row_floats.argtypes = [ctypes.c_int64] * 3
    lib.xunit_padded_row_floats.restype = ctypes.c_int64
    lib.xunit_u_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.xunit_u_rows.restype = None
    lib.xunit_band.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 3
    lib.xunit_band.restype = ctypes.c_int
    return lib


def _native_self_check(lib: ctypes.CDLL) -> float:
    """Max |native − torch ops| over every gate and optional term on a small problem."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for gate_kind, k, pre, post in itertools.product(GATES, (3, 9), (True, False), (True, False)):
        c = 16
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
        x = torch.randn(2, c, 13, 21, generator=g).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            diff = fused_xunit_native(x, terms, lib, bands=2) - fused_xunit_reference(x, terms)
            worst = max(worst, diff.abs().max().item())
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
            except Exception as exc:  # noqa: BLE001 - any failure: torch ops instead
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


def native_applies(x: torch.Tensor, t: FusedTerms) -> bool:
    """Whether the native kernel can run ``t`` on ``x``: a depthwise conv, C % 16 == 0, float32
    CPU tensors, ``x`` 4-D channels_last (ignoring whether the kernel is available)."""
    optional = (t.in_scale, t.in_shift, t.dw_weight, t.dw_bias, t.out_scale, t.out_shift)
    return (
        t.dw_weight is not None
        and t.dw_weight.shape[0] % 16 == 0
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and all(v.dtype == torch.float32 and v.device.type == "cpu" for v in optional if v is not None)
    )


def fused_xunit_native(
    x: torch.Tensor, t: FusedTerms, lib: ctypes.CDLL, inplace: bool = False, bands: int | None = None
) -> torch.Tensor:
    """One fused xUnit forward with the native kernel ``lib`` (from :func:`native_kernel`); the
    caller checks :func:`native_applies`. With ``inplace`` the output overwrites ``x``. ``bands``:
    row bands run in parallel (default ``torch.get_num_threads()``; at most one per 8 rows)."""
    n, c, height, width = x.shape
    k = t.kernel_size
    p = k // 2

    def ptr(v: torch.Tensor | None) -> int | None:
        return None if v is None else v.data_ptr()

    optional = (t.in_scale, t.in_shift, t.out_scale, t.out_shift)
    in_scale, in_shift, out_scale, out_shift = (None if v is None else v.contiguous() for v in optional)
    wt = t.dw_weight.reshape(c, k, k).permute(1, 2, 0).contiguous()
    bias = t.dw_bias.contiguous() if t.dw_bias is not None else torch.zeros(c)
    params = _NativeParams(
        height, width, c, k, ptr(in_scale), ptr(in_shift), int(t.relu), wt.data_ptr(), bias.data_ptr(),
        _GATE_CODES[t.gate], ptr(out_scale), ptr(out_shift),
    )
    y = x if inplace else torch.empty_like(x)
    bands = bands or torch.get_num_threads()
    bands = max(1, min(bands, height // 8))
    starts = [height * b // bands for b in range(bands)] + [height]
    prow = lib.xunit_padded_row_floats(width, c, k)
    image = height * width * c * x.element_size()
    tasks = []
    halos = []  # keeps the halo buffers the tasks point into alive
    for i in range(n):
        xi, yi = x.data_ptr() + i * image, y.data_ptr() + i * image
        # u rows around each band boundary, from x before any band overwrites it
        bounds = [torch.zeros(2 * p, prow) for _ in range(bands - 1)] if p else []
        for b, buf in enumerate(bounds):
            lib.xunit_u_rows(xi, buf.data_ptr(), starts[b + 1] - p, starts[b + 1] + p, ctypes.byref(params))
        halos.append(bounds)
        for b in range(bands):
            top = bounds[b - 1].data_ptr() if p and b > 0 else None
            bottom = bounds[b][p:].data_ptr() if p and b < bands - 1 else None
            tasks.append((xi, yi, starts[b], starts[b + 1], top, bottom))

    def run(task: tuple) -> int:
        return lib.xunit_band(*task, ctypes.byref(params))

    codes = [run(task) for task in tasks] if bands == 1 else list(_thread_pool(bands).map(run, tasks))
    if any(codes):
        raise MemoryError("xUnit CPU kernel could not allocate its row buffers")
    return y
