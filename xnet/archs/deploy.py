"""Inference deployment: fold every BatchNorm away and run each xUnit as a fused gate.

``fuse(model)`` returns a :class:`Deployed` module (eval mode; the original is deep-copied, never
touched) in which

* ``Conv → BN`` pairs become one conv (weights and bias rescaled);
* a BN that follows some other op — xDnCNN's ``[BN, Conv, xUnit]`` blocks, where the BN follows
  the previous xUnit — is composed into that op's output: the xUnit's multiply becomes
  ``x·g·s + t``. Folding it forward into the next conv instead would be exact for the scale
  (a scaled zero pad is still zero) but not for the shift: a zero-padded conv reads zeros at the
  border, not ``t``. A BN before a conv that reads no padding (padding 0 or a non-zero padding
  mode) is folded into that conv; any other BN is kept as a per-channel affine op (exact);
* every :class:`~xnet.archs.xunit.XUnit` becomes a :class:`FusedXUnit`: the first BN is a
  per-channel affine feeding the ReLU (it cannot be folded through the ReLU, and ``x`` itself is
  still needed for the multiply), the second BN is folded into the depthwise conv. An xUnit
  right after a conv overwrites that conv's output in place (no allocation);
* parameters are stored channels_last and the wrapper feeds the body channels_last input.

How a FusedXUnit runs (eager inference):

* CPU, float32, C % 16 == 0: a one-pass native kernel (see :func:`native_kernel`) — ``x`` read
  once, ``y`` written once; compiled on first use with the system C++ compiler, self-checked
  against the torch ops, and skipped (with one warning) if anything fails;
* otherwise torch ops on row tiles of about ``tile_bytes`` per thread: pre-affine + ReLU on the
  tile plus an ``r//2``-row halo, depthwise conv, gate and multiply in place while the tile is
  in cache;
* under autograd, tracing, ``torch.compile`` or ONNX export: :meth:`FusedXUnit.forward_reference`
  (plain out-of-place ops).

``fuse(model, compile=True)`` additionally wraps the body in ``torch.compile`` (inductor, which
fuses the reference ops; on CPU it needs a C++ compiler). Compilation happens on the first call;
if it fails, the wrapper warns once and falls back to the eager fused body, which is kept.

Everything is exact up to float rounding (≤ 1e-4 in ``tests/archs/test_deploy.py`` for every xUnit
variant and model family); :func:`max_abs_diff` measures a given model.
"""
from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import hashlib
import itertools
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from xnet.archs.xunit import GATES, XUnit, gate as apply_gate

__all__ = [
    "ChannelAffine",
    "Deployed",
    "FusedXUnit",
    "bn_affine",
    "fold_conv_bn",
    "fold_affine_into_conv",
    "fuse",
    "max_abs_diff",
    "native_kernel",
]

#: Bytes of one row tile of a FusedXUnit's intermediates (about an L2 cache); 0 disables tiling.
DEFAULT_TILE_BYTES = 1 << 20

_BN = nn.modules.batchnorm._BatchNorm


def _view(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def bn_affine(bn: _BN) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x·scale + shift`` (per channel), computed in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{bn} has no running statistics (track_running_stats=False): it normalises with batch "
            "statistics even in eval mode and cannot be folded"
        )
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    dtype, device = conv.weight.dtype, conv.weight.device
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=device,
        dtype=dtype,
    )
    with torch.no_grad():
        out.weight.copy_(weight.to(dtype))
        if bias is not None:
            out.bias.copy_(bias.to(dtype))
    return out


def fold_conv_bn(conv: nn.Conv2d, bn: _BN) -> nn.Conv2d:
    """``BN(conv(x))`` as a single conv (exact)."""
    scale, shift = bn_affine(bn)
    w = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
    b = conv.bias.detach().double() * scale if conv.bias is not None else torch.zeros_like(scale)
    return _new_conv(conv, w, b + shift)


def _input_scale(conv: nn.Conv2d, scale: torch.Tensor) -> torch.Tensor:
    """Per-(out, in-within-group) multiplier of ``conv.weight`` that realises ``conv(x·scale)``."""
    cout, cin_g = conv.out_channels, conv.weight.shape[1]
    groups = conv.groups
    s = scale.view(groups, 1, cin_g).expand(groups, cout // groups, cin_g).reshape(cout, cin_g)
    return s.view(cout, cin_g, 1, 1)


def _shift_folds_into_bias(conv: nn.Conv2d) -> bool:
    """Whether ``conv(x + t)`` equals ``conv(x) + const`` everywhere (no zero-padded border)."""
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    no_pad = conv.padding != "same" and all(p == 0 for p in padding)
    return no_pad or conv.padding_mode != "zeros"


def fold_affine_into_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None) -> nn.Conv2d:
    """``conv(x·scale + shift)`` as one conv.

    The scale always folds exactly. The shift folds only when the conv never reads padded zeros
    (padding 0 or a non-zero padding mode); callers must check :func:`_shift_folds_into_bias`.
    """
    w0 = conv.weight.detach().double()
    w = w0 * _input_scale(conv, scale.double())
    b = conv.bias.detach().double() if conv.bias is not None else None
    if shift is not None:
        if not _shift_folds_into_bias(conv):
            raise ValueError("a shift before a zero-padded conv cannot be folded into its bias exactly")
        cin_g = conv.weight.shape[1]
        t = shift.double().view(conv.groups, 1, cin_g).expand(conv.groups, conv.out_channels // conv.groups, cin_g)
        extra = (w0 * t.reshape(conv.out_channels, cin_g, 1, 1)).sum(dim=(1, 2, 3))
        b = extra if b is None else b + extra
    return _new_conv(conv, w, b)


class ChannelAffine(nn.Module):
    """``y = x·scale + shift`` per channel: a BatchNorm that nothing around it could absorb."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_bn(cls, bn: _BN) -> "ChannelAffine":
        scale, shift = bn_affine(bn)
        dtype = bn.running_mean.dtype
        return cls(scale.to(dtype), shift.to(dtype))

    def absorb_output_affine(self, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        """Compose ``y ↦ y·scale + shift`` after this op."""
        if scale is not None:
            self.scale = (self.scale.double() * scale.double()).to(self.scale.dtype)
            self.shift = (self.shift.double() * scale.double()).to(self.shift.dtype)
        if shift is not None:
            self.shift = (self.shift.double() + shift.double()).to(self.shift.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(_view(self.shift), x, _view(self.scale))

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"


def _functional_only() -> bool:
    """Tracing / compiling / exporting: use plain out-of-place ops, no tiling loop."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


class FusedXUnit(nn.Module):
    """Inference-only xUnit with both BatchNorms folded.

    ``y = x·g(d)·out_scale + out_shift`` with ``d = DW(ReLU(x·in_scale + in_shift))`` (the depthwise
    conv carries the folded second BN) or, without a depthwise conv, ``d = u·mid_scale + mid_shift``.
    Every optional term is ``None`` when absent. All tensors are buffers (``state_dict`` round-trips).

    Eager inference (no grad needed, not tracing/compiling) runs the native CPU kernel when
    ``cpu_kernel`` allows it and :meth:`native_applies`, else torch ops on row tiles of about
    ``tile_bytes`` per thread (pre-affine + ReLU on the tile plus an ``r//2``-row halo, depthwise
    conv, gate and multiply in place while the tile is in cache). With ``inplace`` the output
    overwrites the input. Otherwise :meth:`forward_reference` (plain out-of-place ops) runs, which
    is what ``torch.compile`` fuses and ONNX export records.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 9,
        gate: str = "gaussian",
        relu: bool = True,
        *,
        in_scale: torch.Tensor | None = None,
        in_shift: torch.Tensor | None = None,
        dw_weight: torch.Tensor | None = None,
        dw_bias: torch.Tensor | None = None,
        mid_scale: torch.Tensor | None = None,
        mid_shift: torch.Tensor | None = None,
        out_scale: torch.Tensor | None = None,
        out_shift: torch.Tensor | None = None,
        tile_bytes: int = DEFAULT_TILE_BYTES,
    ) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown xUnit gate {gate!r}; choose one of {GATES}")
        if (in_scale is None) != (in_shift is None):
            raise ValueError("in_scale and in_shift go together")
        self.channels = channels
        self.kernel_size = kernel_size
        self.gate_kind = gate
        self.relu = relu
        self.tile_bytes = int(tile_bytes)
        #: Overwrite the input with the output (eager inference only). ``fuse`` sets it when the
        #: input is a preceding conv's fresh output that nothing else reads.
        self.inplace = False
        #: ``auto``: the native CPU kernel when it applies and builds, else torch ops; ``native``:
        #: require it (error if unavailable); ``torch``: torch ops only.
        self.cpu_kernel = "auto"
        #: row bands for the native kernel (default: ``torch.get_num_threads()``)
        self.native_bands: int | None = None
        for name, value in (
            ("in_scale", in_scale),
            ("in_shift", in_shift),
            ("dw_weight", dw_weight),
            ("dw_bias", dw_bias),
            ("mid_scale", mid_scale),
            ("mid_shift", mid_shift),
            ("out_scale", out_scale),
            ("out_shift", out_shift),
        ):
            self.register_buffer(name, None if value is None else value.detach().clone())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_xunit(cls, unit: XUnit, tile_bytes: int = DEFAULT_TILE_BYTES) -> "FusedXUnit":
        dtype = next((t.dtype for t in unit.state_dict().values() if t.is_floating_point()), torch.float32)
        in_scale = in_shift = None
        if isinstance(unit.pre_norm, _BN):
            in_scale, in_shift = (t.to(dtype) for t in bn_affine(unit.pre_norm))
        post = bn_affine(unit.post_norm) if isinstance(unit.post_norm, _BN) else None
        dw_weight = dw_bias = mid_scale = mid_shift = None
        if isinstance(unit.depthwise, nn.Conv2d):
            w = unit.depthwise.weight.detach().double()
            b = unit.depthwise.bias.detach().double() if unit.depthwise.bias is not None else None
            if post is not None:
                scale, shift = post
                w = w * scale.view(-1, 1, 1, 1)
                b = shift if b is None else b * scale + shift
            dw_weight = w.to(dtype)
            dw_bias = None if b is None else b.to(dtype)
        elif post is not None:
            mid_scale, mid_shift = (t.to(dtype) for t in post)
        return cls(
            unit.channels,
            unit.kernel_size,
            unit.gate_kind,
            isinstance(unit.relu, nn.ReLU),
            in_scale=in_scale,
            in_shift=in_shift,
            dw_weight=dw_weight,
            dw_bias=dw_bias,
            mid_scale=mid_scale,
            mid_shift=mid_shift,
            tile_bytes=tile_bytes,
        )

    def absorb_output_affine(self, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        """Compose ``y ↦ y·scale + shift`` (e.g. the following BN) into the output multiply."""
        dtype = next((b.dtype for b in self.buffers() if b.is_floating_point()), torch.get_default_dtype())
        out_scale = None if self.out_scale is None else self.out_scale.double()
        out_shift = None if self.out_shift is None else self.out_shift.double()
        if scale is not None:
            scale = scale.double()
            out_scale = scale if out_scale is None else out_scale * scale
            out_shift = None if out_shift is None else out_shift * scale
        if shift is not None:
            shift = shift.double()
            out_shift = shift if out_shift is None else out_shift + shift
        self.out_scale = None if out_scale is None else out_scale.to(dtype)
        self.out_shift = None if out_shift is None else out_shift.to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _functional_only() or (torch.is_grad_enabled() and x.requires_grad) or x.dim() != 4:
            return self.forward_reference(x)
        lib = self._native_lib(x)
        if lib is not None:
            return self._forward_native(x, lib)
        return self._forward_tiled(x)

    def native_applies(self, x: torch.Tensor) -> bool:
        """Whether the native CPU kernel can run this unit on ``x`` (ignoring availability)."""
        optional = (self.in_scale, self.in_shift, self.dw_weight, self.dw_bias, self.out_scale, self.out_shift)
        tensors = [t for t in optional if t is not None]
        return (
            self.dw_weight is not None
            and self.channels % 16 == 0
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        )

    def _native_lib(self, x: torch.Tensor) -> ctypes.CDLL | None:
        if self.cpu_kernel == "torch" or x.device.type != "cpu":
            return None
        if not self.native_applies(x):
            if self.cpu_kernel == "native":
                raise RuntimeError("native xUnit kernel needs NHWC float32 CPU input, C % 16 == 0 and a depthwise conv")
            return None
        lib = native_kernel()
        if lib is None and self.cpu_kernel == "native":
            raise RuntimeError("native xUnit kernel unavailable (see the earlier warning)")
        return lib

    def _forward_native(self, x: torch.Tensor, lib: ctypes.CDLL) -> torch.Tensor:
        n, c, height, width = x.shape
        k = self.kernel_size
        p = k // 2

        def ptr(t: torch.Tensor | None) -> int | None:
            return None if t is None else t.data_ptr()

        optional = (self.in_scale, self.in_shift, self.out_scale, self.out_shift)
        in_scale, in_shift, out_scale, out_shift = (None if t is None else t.contiguous() for t in optional)
        wt = self.dw_weight.reshape(c, k, k).permute(1, 2, 0).contiguous()
        bias = self.dw_bias.contiguous() if self.dw_bias is not None else torch.zeros(c)
        params = _NativeParams(
            height, width, c, k, ptr(in_scale), ptr(in_shift), int(self.relu), wt.data_ptr(), bias.data_ptr(),
            _GATE_CODES[self.gate_kind], ptr(out_scale), ptr(out_shift),
        )
        y = x if self.inplace else torch.empty_like(x)
        bands = self.native_bands or torch.get_num_threads()
        bands = max(1, min(bands, height // 8))
        starts = [height * b // bands for b in range(bands)] + [height]
        prow = lib.xunit_padded_row_floats(width, c, k)
        image = height * width * c * x.element_size()
        tasks = []
        halos = []
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

        if len(tasks) == 1 or bands == 1:
            codes = [run(t) for t in tasks]
        else:
            codes = list(_thread_pool(bands).map(run, tasks))
        if any(codes):
            raise MemoryError("xUnit CPU kernel could not allocate its row buffers")
        return y

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Out-of-place reference: what ``torch.compile`` fuses and ONNX export records."""
        u = x
        if self.in_scale is not None:
            u = u * _view(self.in_scale) + _view(self.in_shift)
        if self.relu:
            u = torch.relu(u)
        if self.dw_weight is not None:
            p = self.kernel_size // 2
            d = F.conv2d(u, self.dw_weight, self.dw_bias, padding=p, groups=self.channels)
        else:
            d = u
            if self.mid_scale is not None:
                d = d * _view(self.mid_scale) + _view(self.mid_shift)
        y = x * apply_gate(d, self.gate_kind)
        if self.out_scale is not None:
            y = y * _view(self.out_scale)
        if self.out_shift is not None:
            y = y + _view(self.out_shift)
        return y

    def _pre(self, xs: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """``ReLU(xs·in_scale + in_shift)`` (into ``out`` if given); the flag says whether the
        result is a fresh tensor (False: it is ``xs`` itself)."""
        if self.in_scale is not None:
            u = torch.addcmul(_view(self.in_shift), xs, _view(self.in_scale), out=out)
            if self.relu:
                u.relu_()
            return u, True
        if self.relu:
            return torch.clamp_min(xs, 0, out=out), True
        if out is not None:
            return out.copy_(xs), True
        return xs, False

    def _gate_(self, d: torch.Tensor) -> torch.Tensor:
        """``g(d)·out_scale``, in place."""
        kind = self.gate_kind
        if kind == "gaussian":
            d.square_().neg_().exp_()
        elif kind == "sigmoid":
            d.sigmoid_()
        elif kind == "tanh":
            d.tanh_()
        if self.out_scale is not None:
            d.mul_(_view(self.out_scale))
        return d

    def _combine(self, g: torch.Tensor, xs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.out_shift is not None:
            return torch.addcmul(_view(self.out_shift), g, xs, out=out)
        return torch.mul(g, xs, out=out)

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Row tiles, each: ``u`` (with a ``p``-row halo), depthwise conv, gate, multiply.

        With ``inplace`` the output overwrites ``x`` (the caller guarantees ``x`` is a temporary,
        e.g. the preceding conv's output): the ``p`` rows of ``u`` above the next tile are kept
        from the current tile, since the ``x`` rows they came from are overwritten by then.
        """
        n, c, height, width = x.shape
        row_bytes = n * c * width * x.element_size()
        tiled = self.tile_bytes > 0 and x.device.type == "cpu"  # a cache optimisation: CPU only
        # each intra-op thread gets about tile_bytes of the tile (fewer, larger ops when threaded)
        budget = self.tile_bytes * max(1, torch.get_num_threads())
        rows = max(self.kernel_size, budget // max(row_bytes, 1)) if tiled else height
        rows = min(rows, height)
        depthwise = self.dw_weight is not None
        p = self.kernel_size // 2 if depthwise else 0
        inplace = self.inplace
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = x if inplace else (None if rows == height else torch.empty_like(x))
        tail: torch.Tensor | None = None  # u rows [r0 - p, r0) when x above r0 is already overwritten
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            lo, hi = max(0, r0 - p), min(height, r1 + p)
            if tail is not None:
                u = torch.empty((n, c, hi - lo, width), dtype=x.dtype, device=x.device, memory_format=layout)
                u[:, :, : r0 - lo].copy_(tail)
                self._pre(x[:, :, r0:hi], out=u[:, :, r0 - lo :])
                fresh = True
            else:
                u, fresh = self._pre(x[:, :, lo:hi])
            if inplace and p > 0 and r1 < height:
                tail = u[:, :, r1 - p - lo : r1 - lo]
                if not fresh:
                    tail = tail.clone()
            if depthwise:
                pad = max(p - (r0 - lo), p - (hi - r1))
                d = F.conv2d(u, self.dw_weight, self.dw_bias, padding=(pad, p), groups=self.channels)
                k0 = r0 - lo + pad - p
                if k0 != 0 or d.shape[2] != r1 - r0:
                    d = d[:, :, k0 : k0 + (r1 - r0)]
            elif self.mid_scale is not None:
                d = torch.addcmul(_view(self.mid_shift), u, _view(self.mid_scale))
            else:
                d = u if fresh else u.clone()
            del u
            g = self._gate_(d)
            xs = x[:, :, r0:r1]
            if out is None:  # one tile, out of place: g becomes the output
                return self._combine(g, xs, out=g)
            self._combine(g, xs, out=out[:, :, r0:r1])
        return out

    def extra_repr(self) -> str:
        terms = [f"channels={self.channels}", f"kernel_size={self.kernel_size}", f"gate={self.gate_kind}"]
        for name in ("in_scale", "relu", "dw_weight", "mid_scale", "out_scale", "out_shift"):
            if getattr(self, name) is not None and getattr(self, name) is not False:
                terms.append(name)
        return ", ".join(terms)


# ---------------------------------------------------------------------- native CPU kernel
#: C++ source of the one-pass CPU xUnit kernel (NHWC float32, C % 16 == 0). It is compiled on first
#: use with the system C++ compiler (``$CXX`` or ``c++``, ``-O3 -march=native``) into
#: ``$XNET_CACHE_DIR`` (default ``~/.cache/xnet``), loaded with ctypes and checked against the torch
#: ops once; if any step fails the torch-ops path is used. Per output row it keeps the ``r`` rows of
#: ``u = ReLU(x·in_scale + in_shift)`` in a ring buffer, does the depthwise conv with 16-pixel ×
#: 16-channel register blocks (each loaded ``u`` vector feeds up to ``r`` FMAs), then gate,
#: ``out_scale``/``out_shift`` and the multiply — so ``x`` is read once and ``y`` written once, in
#: place when allowed. Threads work on bands of rows (Python threads; ctypes drops the GIL); the
#: ``r//2`` rows of ``u`` around each band boundary are computed first, so bands may overwrite
#: their own rows of ``x``.
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

_GATE_CODES = {"gaussian": 0, "sigmoid": 1, "tanh": 2, "identity": 3}
_native_state: dict[str, Any] = {}
_native_lock = threading.Lock()


class _NativeParams(ctypes.Structure):
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
        unit = FusedXUnit(
            c,
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
        unit.native_bands = 2
        x = torch.randn(2, c, 13, 21, generator=g).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            worst = max(worst, (unit._forward_native(x, lib) - unit.forward_reference(x)).abs().max().item())
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


_pool_state: dict[str, Any] = {}


def _thread_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    pool = _pool_state.get("pool")
    if pool is None or _pool_state.get("workers", 0) < workers:
        if pool is not None:
            pool.shutdown(wait=False)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xunit")
        _pool_state.update(pool=pool, workers=workers)
    return pool


# ---------------------------------------------------------------------- graph rewriting
def _absorbs_output_affine(m: nn.Module | None) -> bool:
    return isinstance(m, (FusedXUnit, ChannelAffine, nn.Conv2d))


def _absorb_into_previous(prev: nn.Module, scale: torch.Tensor | None, shift: torch.Tensor | None) -> nn.Module:
    """``prev`` followed by ``y·scale + shift``, as one module (exact)."""
    if isinstance(prev, nn.Conv2d):
        ones = torch.ones(prev.out_channels, dtype=torch.float64, device=prev.weight.device)
        s = ones if scale is None else scale.double()
        t = torch.zeros_like(ones) if shift is None else shift.double()
        w = prev.weight.detach().double() * s.view(-1, 1, 1, 1)
        b = prev.bias.detach().double() * s if prev.bias is not None else torch.zeros_like(s)
        return _new_conv(prev, w, b + t)
    prev.absorb_output_affine(scale, shift)
    return prev


def _fuse_sequence(mods: list[nn.Module], tile_bytes: int) -> list[nn.Module]:
    out: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Identity):
            i += 1
            continue
        if isinstance(m, nn.Conv2d) and isinstance(nxt, _BN):
            out.append(fold_conv_bn(m, nxt))
            i += 2
            continue
        if isinstance(m, _BN):
            scale, shift = bn_affine(m)
            prev = out[-1] if out else None
            if _absorbs_output_affine(prev):
                # Into the preceding op's output (the xUnit's multiply becomes x·g·s + t): exact.
                out[-1] = _absorb_into_previous(prev, scale, shift)
            elif isinstance(nxt, nn.Conv2d) and _shift_folds_into_bias(nxt):
                out.append(fold_affine_into_conv(nxt, scale, shift))
                i += 1
            else:
                # A zero-padded conv reads zeros at the border, not the BN's shift: keep the BN
                # as a per-channel affine op (exact, one memory pass).
                out.append(ChannelAffine.from_bn(m))
            i += 1
            continue
        fresh_input = bool(out) and isinstance(out[-1], nn.Conv2d)  # nothing else reads it
        if isinstance(m, nn.ReLU) and fresh_input and not m.inplace:
            out.append(nn.ReLU(inplace=True))
            i += 1
            continue
        fused = _fuse_module(m, tile_bytes)
        if isinstance(fused, FusedXUnit) and fresh_input:
            fused.inplace = True
        out.append(fused)
        i += 1
    return out


def _fuse_module(m: nn.Module, tile_bytes: int) -> nn.Module:
    if isinstance(m, XUnit):
        return FusedXUnit.from_xunit(m, tile_bytes=tile_bytes)
    if isinstance(m, _BN):
        return ChannelAffine.from_bn(m)
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*_fuse_sequence(list(m.children()), tile_bytes))
    for name, child in list(m.named_children()):
        setattr(m, name, _fuse_module(child, tile_bytes))
    return m


class Deployed(nn.Module):
    """A fused body plus its input layout (channels_last) and, optionally, a compiled twin.

    Inference only: the forward runs under ``torch.no_grad()`` unless the input requires grad.
    ``body`` is the eager fused module (always available); ``compiled`` the ``torch.compile``
    wrapper, or ``None``. The compiled twin is not registered as a submodule, so ``state_dict``
    is the body's.
    """

    def __init__(self, body: nn.Module, channels_last: bool = True, compiled: Any = None) -> None:
        super().__init__()
        self.body = body
        self.channels_last = channels_last
        object.__setattr__(self, "compiled", compiled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() and x.requires_grad:
            y = self.body(x)
        else:
            with torch.no_grad():
                y = self._run(x)
        if self.channels_last and y.dim() == 4:
            y = y.contiguous()
        return y

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.compiled
        if compiled is None or _functional_only():
            return self.body(x)
        try:
            return compiled(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to eager
            warnings.warn(
                f"torch.compile of the fused model failed ({type(exc).__name__}: {exc}); using eager", stacklevel=3
            )
            object.__setattr__(self, "compiled", None)
            return self.body(x)


def fuse(
    model: nn.Module,
    *,
    channels_last: bool = True,
    compile: bool = False,  # noqa: A002 - mirrors torch.compile
    compile_options: dict[str, Any] | None = None,
    dynamic: bool | None = None,
    tile_bytes: int = DEFAULT_TILE_BYTES,
    cpu_kernel: str = "auto",
) -> Deployed:
    """Deployment copy of ``model``: BatchNorms folded, xUnits fused, channels_last, eval mode.

    Args:
        model: any module built from Conv2d / BatchNorm2d / XUnit / activations; Sequentials are
            rewritten, other containers keep their ``forward`` with their children fused.
        channels_last: store 4-D weights channels_last and convert the input.
        compile: wrap the fused body in ``torch.compile`` (falls back to eager on failure).
        compile_options: inductor options (default ``{"freezing": True}``: weights become
            constants, so convolutions are prepacked).
        dynamic: passed to ``torch.compile``.
        tile_bytes: FusedXUnit row-tile size for the torch-ops path (0: whole image at once).
        cpu_kernel: ``auto`` (default): eager CPU inference of float32 NHWC units with C % 16 == 0
            uses the one-pass native kernel (built on first use with the system C++ compiler,
            see :func:`native_kernel`), falling back to torch ops; ``native``: require it;
            ``torch``: torch ops only.
    """
    if cpu_kernel not in {"auto", "native", "torch"}:
        raise ValueError(f"cpu_kernel must be auto, native or torch, got {cpu_kernel!r}")
    if isinstance(model, Deployed):
        raise TypeError("model is already fused")
    model = getattr(model, "_orig_mod", model)  # an OptimizedModule from torch.compile
    body = copy.deepcopy(model).eval()
    body = _fuse_module(body, tile_bytes)
    for p in body.parameters():
        p.requires_grad_(False)
    for m in body.modules():
        if isinstance(m, FusedXUnit):
            m.cpu_kernel = cpu_kernel
    body.eval()
    if channels_last:
        body = body.to(memory_format=torch.channels_last)
    compiled = None
    if compile:
        options = {"freezing": True} if compile_options is None else dict(compile_options)
        try:
            compiled = torch.compile(body, dynamic=dynamic, options=options)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"torch.compile unavailable ({exc}); using the eager fused model", stacklevel=2)
    return Deployed(body, channels_last=channels_last, compiled=compiled)


@torch.no_grad()
def max_abs_diff(
    reference: nn.Module,
    candidate: nn.Module,
    inputs: torch.Tensor | Iterable[torch.Tensor],
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    """Largest ``|reference(x) - candidate(x)|`` over ``inputs``, after clipping to ``clip``."""
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    worst = 0.0
    for x in inputs:
        a, b = reference(x), candidate(x)
        if clip is not None:
            a, b = a.clamp(*clip), b.clamp(*clip)
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    return worst if math.isfinite(worst) else float("inf")
