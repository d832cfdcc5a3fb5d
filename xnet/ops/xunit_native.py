"""One-pass native CPU kernel for a fused xUnit (NHWC float32, C % 16 == 0).

:data:`_NATIVE_SOURCE` is C++ compiled on first use with the system C++ compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``; ``-O3 -march=native``) into ``$XNET_CACHE_DIR`` (default
``~/.cache/xnet``; the file name hashes the source, compiler, flags and CPU flags), loaded with
ctypes and checked once against :func:`xnet.ops.xunit_gate.fused_xunit_reference`.
:func:`native_kernel` returns the loaded library, or ``None`` if any step fails (one warning) or
``XNET_NATIVE=0``; callers then use the torch ops (:mod:`xnet.ops.xunit_gate`).

The kernel works on one 16-channel block at a time (a block is one 64-byte cache line per pixel
of an NHWC row): per output row it keeps that block's ``r`` rows of ``u = ReLU(x·in_scale +
in_shift)`` in a ring buffer small enough for L2, does the depthwise conv with 16-pixel register
blocks (each loaded ``u`` vector feeds up to ``r`` FMAs) and applies the gate, ``out_scale``/
``out_shift`` and the multiply straight from the accumulators — so ``x`` is read from memory once
and ``y`` written once, in place when allowed. Rows are taken in chunks of 8 with the channel blocks
inside, so a chunk's ``x`` rows are still cached for the later blocks. :func:`fused_xunit_native`
splits the rows into bands run on Python threads (ctypes drops the GIL); the ``r//2`` rows of ``u``
around each band boundary are computed first, so bands may overwrite their own rows of ``x``.
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

from xnet.archs.xunit import GATES
from xnet.ops.xunit_gate import FusedTerms, fused_xunit_reference

__all__ = [
    "depthwise_conv_native",
    "depthwise_grad_weight_native",
    "fused_xunit_native",
    "native_applies",
    "native_kernel",
]

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
    v16 p = splat(1.0f / 720.0f);  // degree 6 on |r| <= ln2/2: relative error 1.2e-7
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

enum { GAUSSIAN = 0, SIGMOID = 1, TANH = 2, IDENTITY = 3, CONV_ONLY = 4 };  // CONV_ONLY: y = d

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

enum { BLK = 16, VEC = 16, SUB = 8 };  // output pixels per register block; channels per block; rows per chunk

// One channel block (VEC channels) of a u row, padded: P zero pixels, W data pixels, P + BLK zero
// pixels; VEC floats per pixel. Working on one channel block at a time keeps the R-row ring of u
// small enough for L2 (R = 9, W = 481: 286 KB instead of 1.1 MB for C = 64), which is what makes
// the depthwise conv compute-bound rather than bound by L3 traffic.
static inline int64_t padded_px(const Params& q) { return q.W + 2 * (q.R / 2) + BLK; }

// u = ReLU(x*s + t) for channels [c, c + VEC) of one x row
static void make_u_row(const Params& q, const float* xrow, int64_t c, float* urow) {
    float* dst = urow + (q.R / 2) * VEC;
    const v16 s = q.in_scale ? ld(q.in_scale + c) : splat(1.0f);
    const v16 t = q.in_shift ? ld(q.in_shift + c) : splat(0.0f);
    for (int64_t w = 0; w < q.W; ++w) {
        v16 v = ld(xrow + w * q.C + c);
        if (q.in_scale) v = v * s + t;
        if (q.relu) v = v < 0.0f ? splat(0.0f) : v;
        st(dst + w * VEC, v);
    }
}

// y = x * gate(d) * os + ot for the first n pixels of a block, straight from the accumulators
template <int G>
static inline void finish_block(const Params& q, const v16* acc, int n, int64_t c, const float* x, float* y) {
    const v16 os = q.out_scale ? ld(q.out_scale + c) : splat(1.0f);
    const v16 ot = q.out_shift ? ld(q.out_shift + c) : splat(0.0f);
#pragma GCC unroll 16
    for (int i = 0; i < BLK; ++i) {
        if (i >= n) break;
        const v16 g = vgate(acc[i], G) * os;
        st(y + i * q.C, ld(x + i * q.C) * g + ot);
    }
}

static inline void finish(const Params& q, const v16* acc, int n, int64_t c, const float* x, float* y) {
    switch (q.gate) {
        case GAUSSIAN: finish_block<GAUSSIAN>(q, acc, n, c, x, y); break;
        case SIGMOID: finish_block<SIGMOID>(q, acc, n, c, x, y); break;
        case TANH: finish_block<TANH>(q, acc, n, c, x, y); break;
        case IDENTITY: finish_block<IDENTITY>(q, acc, n, c, x, y); break;
        default:
            for (int i = 0; i < n; ++i) st(y + i * q.C, acc[i]);
    }
}

// One output row, channels [c, c + VEC): depthwise conv over the R u rows, then the gate.
template <int R>
static void xunit_row_t(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow) {
    const v16 b = ld(q.bias + c);
    for (int64_t x0 = 0; x0 < q.W; x0 += BLK) {
        v16 acc[BLK];
#pragma GCC unroll 16
        for (int i = 0; i < BLK; ++i) acc[i] = b;
        for (int ky = 0; ky < R; ++ky) {
            const float* u = urows[ky] + x0 * VEC;  // column x0 - P + j lives at (x0 + j) in the padded row
            v16 w[R];
#pragma GCC unroll 16
            for (int kx = 0; kx < R; ++kx) w[kx] = ld(q.wt + (ky * R + kx) * q.C + c);
#pragma GCC unroll 32
            for (int j = 0; j < BLK + R - 1; ++j) {
                const v16 uv = ld(u + j * VEC);
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) {
                    const int i = j - kx;
                    if (i >= 0 && i < BLK) acc[i] += w[kx] * uv;
                }
            }
        }
        const int64_t n = q.W - x0 < BLK ? q.W - x0 : BLK;
        finish(q, acc, (int)n, c, xrow + x0 * q.C + c, yrow + x0 * q.C + c);
    }
}

static void xunit_row_generic(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow) {
    const int64_t R = q.R;
    for (int64_t x = 0; x < q.W; ++x) {
        v16 acc = ld(q.bias + c);
        for (int64_t ky = 0; ky < R; ++ky)
            for (int64_t kx = 0; kx < R; ++kx)
                acc += ld(q.wt + (ky * R + kx) * q.C + c) * ld(urows[ky] + (x + kx) * VEC);
        finish(q, &acc, 1, c, xrow + x * q.C + c, yrow + x * q.C + c);
    }
}

static void xunit_row(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow) {
    switch (q.R) {
        case 1: xunit_row_t<1>(q, urows, c, xrow, yrow); break;
        case 3: xunit_row_t<3>(q, urows, c, xrow, yrow); break;
        case 5: xunit_row_t<5>(q, urows, c, xrow, yrow); break;
        case 7: xunit_row_t<7>(q, urows, c, xrow, yrow); break;
        case 9: xunit_row_t<9>(q, urows, c, xrow, yrow); break;
        default: xunit_row_generic(q, urows, c, xrow, yrow);
    }
}

// Weight gradient of the depthwise conv d = DW_R(u) (zero padding R/2): for rows [s, e) of one
// image, gw[ky][kx][c] += sum over pixels p of u[p + (ky, kx) - P][c] * g[p][c]. u and g are NHWC.
template <int R>
static void dw_grad_weight_t(const Params& q, const float* u, const float* g, float* gw, int64_t s, int64_t e) {
    constexpr int P = R / 2;
    const int64_t C = q.C, W = q.W, row = W * C;
    for (int64_t c = 0; c < C; c += VEC) {
        v16 tot[R * R];
        for (int k = 0; k < R * R; ++k) tot[k] = splat(0.0f);
        for (int64_t i = s; i < e; ++i) {
            const float* grow = g + i * row + c;
            for (int ky = 0; ky < R; ++ky) {
                const int64_t j = i - P + ky;
                if (j < 0 || j >= q.H) continue;
                const float* urow = u + j * row + c;
                v16 a[R];
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) a[kx] = splat(0.0f);
                // interior: every tap in range; each loaded u vector feeds its R taps from registers
                const int64_t x0 = P, x1 = W - P;
                for (int64_t x = x0; x < x1; ++x) {
                    const v16 gv = ld(grow + x * C);
#pragma GCC unroll 16
                    for (int kx = 0; kx < R; ++kx) a[kx] += gv * ld(urow + (x + kx - P) * C);
                }
                // borders (and images narrower than R)
                for (int64_t x = 0; x < W; ++x) {
                    if (x >= x0 && x < x1) continue;
                    const v16 gv = ld(grow + x * C);
                    for (int kx = 0; kx < R; ++kx) {
                        const int64_t xx = x + kx - P;
                        if (xx >= 0 && xx < W) a[kx] += gv * ld(urow + xx * C);
                    }
                }
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) tot[ky * R + kx] += a[kx];
            }
        }
        for (int k = 0; k < R * R; ++k) st(gw + k * C + c, ld(gw + k * C + c) + tot[k]);
    }
}

static void dw_grad_weight_generic(const Params& q, const float* u, const float* g, float* gw, int64_t s, int64_t e) {
    const int64_t C = q.C, W = q.W, R = q.R, P = R / 2, row = W * C;
    for (int64_t c = 0; c < C; c += VEC)
        for (int64_t i = s; i < e; ++i)
            for (int64_t ky = 0; ky < R; ++ky) {
                const int64_t j = i - P + ky;
                if (j < 0 || j >= q.H) continue;
                for (int64_t kx = 0; kx < R; ++kx) {
                    v16 a = splat(0.0f);
                    for (int64_t x = 0; x < W; ++x) {
                        const int64_t xx = x + kx - P;
                        if (xx >= 0 && xx < W) a += ld(g + i * row + x * C + c) * ld(u + j * row + xx * C + c);
                    }
                    st(gw + (ky * R + kx) * C + c, ld(gw + (ky * R + kx) * C + c) + a);
                }
            }
}


extern "C" {

// Floats per u row over all channel blocks; halo buffers hold 2P of these.
int64_t xunit_padded_row_floats(int64_t W, int64_t C, int64_t R) {
    Params q{};
    q.W = W; q.C = C; q.R = R;
    return padded_px(q) * C;
}

// u rows [r_begin, r_end) of image x (rows outside [0, H) are left zero) into `out`, laid out
// [channel block][row - r_begin][padded pixel][VEC] (zero-initialised by the caller).
void xunit_u_rows(const float* x, float* out, int64_t r_begin, int64_t r_end, const Params* q) {
    const int64_t row = q->W * q->C, pp = padded_px(*q) * VEC, n = r_end - r_begin;
    for (int64_t c = 0; c < q->C; c += VEC)
        for (int64_t j = r_begin; j < r_end; ++j)
            if (j >= 0 && j < q->H) make_u_row(*q, x + j * row, c, out + ((c / VEC) * n + (j - r_begin)) * pp);
}

// Output rows [s, e) of one image. u rows [s - P, s) come from `halo_top` and [e, e + P) from
// `halo_bottom` (each points at the first wanted row of an xunit_u_rows buffer of 2P rows), unless
// they lie outside the image (then zero) or s == 0 / e == H. y may alias x: in each channel block,
// row i of y is written only after every u row that reads x row i (each block has its own ring
// and its own next row, so the order of chunks and blocks does not matter for that).
int xunit_band(const float* x, float* y, int64_t s, int64_t e, const float* halo_top, const float* halo_bottom,
               const Params* qp) {
    const Params& q = *qp;
    const int64_t R = q.R, P = R / 2, row = q.W * q.C, pp = padded_px(q) * VEC;
    const int64_t nb = q.C / VEC;
    // one ring of R u rows per channel block, plus a zero row
    float* ring = static_cast<float*>(std::calloc((size_t)((nb * R + 1) * pp), sizeof(float)));
    if (!ring) return 1;
    const float* zero = ring + nb * R * pp;  // stays zero
    const float** urows = static_cast<const float**>(std::malloc(sizeof(float*) * (size_t)R));
    int64_t* next = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * (size_t)nb));  // next own u row, per block
    if (!urows || !next) { std::free(ring); std::free(urows); std::free(next); return 1; }
    for (int64_t b = 0; b < nb; ++b) next[b] = s;  // next own u row to compute, per block
    // Row chunks × channel blocks: a chunk's x rows stay in cache across the channel-block passes.
    for (int64_t s1 = s; s1 < e; s1 += SUB) {
        const int64_t e1 = s1 + SUB < e ? s1 + SUB : e;
        for (int64_t c = 0; c < q.C; c += VEC) {
            const int64_t cb = c / VEC, halo_offset = cb * 2 * P * pp;
            float* rb = ring + cb * R * pp;
            for (int64_t i = s1; i < e1; ++i) {
                const int64_t need = i + P < e ? i + P : e - 1;
                for (; next[cb] <= need; ++next[cb]) make_u_row(q, x + next[cb] * row, c, rb + (next[cb] % R) * pp);
                for (int64_t ky = 0; ky < R; ++ky) {
                    const int64_t j = i - P + ky;
                    if (j < 0 || j >= q.H) urows[ky] = zero;
                    else if (j < s) urows[ky] = halo_top + halo_offset + (j - (s - P)) * pp;
                    else if (j >= e) urows[ky] = halo_bottom + halo_offset + (j - e) * pp;
                    else urows[ky] = rb + (j % R) * pp;
                }
                xunit_row(q, urows, c, x + i * row, y + i * row);
            }
        }
    }
    std::free(next);
    std::free(urows);
    std::free(ring);
    return 0;
}

// Depthwise-conv weight gradient over rows [s, e) of one image, accumulated into gw ([ky][kx][c]).
void xunit_dw_grad_weight(const float* u, const float* g, float* gw, int64_t s, int64_t e, const Params* qp) {
    const Params& q = *qp;
    switch (q.R) {
        case 1: dw_grad_weight_t<1>(q, u, g, gw, s, e); break;
        case 3: dw_grad_weight_t<3>(q, u, g, gw, s, e); break;
        case 5: dw_grad_weight_t<5>(q, u, g, gw, s, e); break;
        case 7: dw_grad_weight_t<7>(q, u, g, gw, s, e); break;
        case 9: dw_grad_weight_t<9>(q, u, g, gw, s, e); break;
        default: dw_grad_weight_generic(q, u, g, gw, s, e);
    }
}

}  // extern "C"
"""


_GATE_CODES = {"gaussian": 0, "sigmoid": 1, "tanh": 2, "identity": 3}  # the C++ enum
_CONV_ONLY = 4  # the C++ enum's CONV_ONLY: the kernel writes d itself
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
    lib.xunit_dw_grad_weight.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
    lib.xunit_dw_grad_weight.restype = None
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
            got = fused_xunit_native(x, terms, lib, inplace=post, bands=2)
            worst = max(worst, (got - expected).abs().max().item())
    # conv-only mode and the weight gradient, against torch's depthwise conv and its backward
    for k in (3, 9):
        u = torch.randn(2, 32, 19, 11, generator=g).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(32, 1, k, k, generator=g), torch.randn(32, generator=g)
        gd = torch.randn(2, 32, 19, 11, generator=g).contiguous(memory_format=torch.channels_last)
        ref_gw = torch.ops.aten.convolution_backward(
            gd, u, w, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 32, [False, True, False]
        )[1]
        d = depthwise_conv_native(u, w, b, lib, bands=2)
        gw = depthwise_grad_weight_native(u, gd, k, lib, bands=2)
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


def _ptr(v: torch.Tensor | None) -> int | None:
    return None if v is None else v.data_ptr()


def _row_bands(height: int, bands: int | None) -> list[int]:
    """Band start rows (plus ``height``): ``bands`` (default ``torch.get_num_threads()``), at most
    one per 8 rows."""
    bands = max(1, min(bands or torch.get_num_threads(), height // 8))
    return [height * b // bands for b in range(bands)] + [height]


def _run_tasks(fn: Any, tasks: list[tuple], workers: int) -> list[Any]:
    return [fn(task) for task in tasks] if workers == 1 else list(_thread_pool(workers).map(fn, tasks))


def _band_pass(x: torch.Tensor, y: torch.Tensor, params: _NativeParams, lib: ctypes.CDLL, bands: int | None) -> None:
    """Run ``xunit_band`` over every image of ``x`` (NHWC float32) into ``y``, rows split into
    parallel bands whose boundary rows of ``u`` are computed first (so ``y`` may be ``x``)."""
    n, c, height, width = x.shape
    p = params.R // 2
    starts = _row_bands(height, bands)
    prow = lib.xunit_padded_row_floats(width, c, params.R)
    block_row_bytes = prow // c * 16 * x.element_size()  # one padded u row of one 16-channel block
    image = height * width * c * x.element_size()
    tasks = []
    halos = []  # keeps the halo buffers the tasks point into alive
    for i in range(n):
        xi, yi = x.data_ptr() + i * image, y.data_ptr() + i * image
        # u rows around each band boundary, from x before any band overwrites it
        bounds = [torch.zeros(2 * p, prow) for _ in range(len(starts) - 2)] if p else []
        for b, buf in enumerate(bounds):
            lib.xunit_u_rows(xi, buf.data_ptr(), starts[b + 1] - p, starts[b + 1] + p, ctypes.byref(params))
        halos.append(bounds)
        for b in range(len(starts) - 1):
            top = bounds[b - 1].data_ptr() if p and b > 0 else None
            # rows [e, e + P) start P rows into the buffer (in each of its channel blocks)
            bottom = bounds[b].data_ptr() + p * block_row_bytes if p and b < len(starts) - 2 else None
            tasks.append((xi, yi, starts[b], starts[b + 1], top, bottom))

    def run(task: tuple) -> int:
        return lib.xunit_band(*task, ctypes.byref(params))

    if any(_run_tasks(run, tasks, len(starts) - 1)):
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
    bands: int | None = None,
) -> torch.Tensor:
    """One fused xUnit forward with the native kernel ``lib`` (from :func:`native_kernel`); the
    caller checks :func:`native_applies`. With ``inplace`` the output overwrites ``x``. ``bands``:
    row bands run in parallel (default ``torch.get_num_threads()``; at most one per 8 rows)."""
    n, c, height, width = x.shape
    optional = (t.in_scale, t.in_shift, t.out_scale, t.out_shift)
    in_scale, in_shift, out_scale, out_shift = (None if v is None else v.contiguous() for v in optional)
    wt = _taps_last(t.dw_weight)
    bias = t.dw_bias.contiguous() if t.dw_bias is not None else torch.zeros(c)
    params = _NativeParams(
        height, width, c, t.kernel_size, _ptr(in_scale), _ptr(in_shift), int(t.relu), wt.data_ptr(),
        bias.data_ptr(), _GATE_CODES[t.gate], _ptr(out_scale), _ptr(out_shift),
    )
    y = x if inplace else torch.empty_like(x)
    _band_pass(x, y, params, lib, bands)
    return y


def depthwise_conv_native(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lib: ctypes.CDLL, bands: int | None = None
) -> torch.Tensor:
    """``F.conv2d(u, weight, bias, padding=k // 2, groups=C)`` for NHWC float32 ``u`` (C % 16 == 0,
    odd k) with the native kernel; the output is channels_last."""
    n, c, height, width = u.shape
    k = weight.shape[-1]
    wt = _taps_last(weight)
    b = bias.detach().contiguous().float() if bias is not None else torch.zeros(c)
    params = _NativeParams(height, width, c, k, None, None, 0, wt.data_ptr(), b.data_ptr(), _CONV_ONLY, None, None)
    d = torch.empty_like(u, memory_format=torch.channels_last)
    _band_pass(u, d, params, lib, bands)
    return d


def depthwise_grad_weight_native(
    u: torch.Tensor, grad: torch.Tensor, kernel_size: int, lib: ctypes.CDLL, bands: int | None = None
) -> torch.Tensor:
    """Weight gradient ``(C, 1, k, k)`` of ``conv2d(u, w, padding=k // 2, groups=C)`` given the
    output gradient ``grad``; both NHWC float32 of one shape, C % 16 == 0."""
    n, c, height, width = u.shape
    k = kernel_size
    params = _NativeParams(height, width, c, k, None, None, 0, None, None, _CONV_ONLY, None, None)
    starts = _row_bands(height, bands)
    image = height * width * c * u.element_size()
    workers = len(starts) - 1
    partial = torch.zeros(workers, k * k * c)  # one accumulator per band

    def run(task: tuple[int, int]) -> None:
        i, band = task
        lib.xunit_dw_grad_weight(
            u.data_ptr() + i * image, grad.data_ptr() + i * image, partial[band].data_ptr(),
            starts[band], starts[band + 1], ctypes.byref(params),
        )

    for i in range(n):  # bands in parallel (each into its own accumulator), images in turn
        _run_tasks(run, [(i, band) for band in range(workers)], workers)
    return partial.sum(0).view(k, k, c).permute(2, 0, 1).unsqueeze(1).contiguous()
