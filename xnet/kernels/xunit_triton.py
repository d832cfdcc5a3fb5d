"""One-pass Triton kernel for a fused xUnit on the GPU (any memory layout; fp32, fp16 or bf16).

The same computation as :func:`xnet.kernels.xunit_gate.fused_xunit_reference` —
``y = x·g(d)·out_scale + out_shift`` with ``d = DW_r(ReLU(x·in_scale + in_shift)) + b`` (or
``d = u·mid_scale + mid_shift`` without a depthwise conv) — in one kernel: each program takes one
image row, ``BLOCK_W`` pixels × ``BLOCK_C`` channels, loads the ``r × r`` neighbourhood of ``x``
(zero outside the image, as the conv's zero padding sees ``u``), accumulates in float32 and writes
``y`` once. With channels_last input a pixel's channels are contiguous, so every load is coalesced;
neighbouring programs re-read ``x`` through L1/L2 rather than DRAM. In place is not possible (a
program reads rows its neighbours write), so the output is a new tensor.

Triton is optional: :func:`triton_available` says whether it imports, and
:func:`xnet.deploy.fuse.FusedXUnit` uses this kernel for eager CUDA inference when it does
(``gpu_kernel``), else torch ops. The kernel also runs on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how the tests check it on machines without a GPU.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import torch

from xnet.kernels.gate import GATES
from xnet.kernels import triton_tiles
from xnet.kernels.triton_tiles import channel_block
from xnet.kernels.xunit_gate import FusedTerms

__all__ = ["fused_xunit_triton", "triton_available", "triton_interpreting"]

_GATE_CODES = {name: i for i, name in enumerate(GATES)}  # gaussian, sigmoid, tanh, identity


def triton_interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in {"", "0", "false", "no"}


@functools.lru_cache(maxsize=None)
def _kernel() -> Any:
    """The jitted kernel (built on first use, so importing xnet never imports Triton)."""
    import triton
    import triton.language as tl

    triton_tiles.load()

    @triton.jit
    def xunit_fwd(
        x_ptr, y_ptr, in_scale_ptr, in_shift_ptr, w_ptr, b_ptr, mid_scale_ptr, mid_shift_ptr,
        out_scale_ptr, out_shift_ptr,
        C, H, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        R: tl.constexpr, GATE: tl.constexpr, RELU: tl.constexpr, HAS_IN: tl.constexpr, HAS_DW: tl.constexpr,
        HAS_DW_BIAS: tl.constexpr, HAS_MID: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
        HAS_OUT_SHIFT: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        n, h, ws, cs, w_ok, c_ok = triton_tiles.row_tile(C, H, W, BLOCK_W, BLOCK_C)
        x_img = x_ptr + n.to(tl.int64) * sxn + cs[None, :] * sxc
        if HAS_IN:
            s_in = tl.load(in_scale_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            t_in = tl.load(in_shift_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        x_c = tl.load(x_img + h.to(tl.int64) * sxh + ws[:, None] * sxw, mask=w_ok[:, None] & c_ok[None, :], other=0.0)
        x_c = x_c.to(tl.float32)
        if HAS_DW:
            acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
            for ky in tl.static_range(R):
                # the row index as a vector: Triton's interpreter mis-types scalar & vector masks
                hh = h + ky - R // 2 + tl.zeros([BLOCK_W], dtype=tl.int32)
                h_ok = (hh >= 0) & (hh < H)
                for kx in tl.static_range(R):
                    ww = ws + kx - R // 2
                    ok = (h_ok & (ww >= 0) & (ww < W))[:, None] & c_ok[None, :]
                    u = tl.load(x_img + hh[:, None].to(tl.int64) * sxh + ww[:, None] * sxw, mask=ok, other=0.0).to(tl.float32)
                    if HAS_IN:
                        u = u * s_in + t_in
                    if RELU:
                        u = tl.maximum(u, 0.0)
                    u = tl.where(ok, u, 0.0)  # the conv's zero padding is on u, not on x
                    wt = tl.load(w_ptr + (ky * R + kx) * C + cs, mask=c_ok, other=0.0).to(tl.float32)
                    acc += u * wt[None, :]
            if HAS_DW_BIAS:
                acc += tl.load(b_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            d = acc
        else:
            d = x_c
            if HAS_IN:
                d = d * s_in + t_in
            if RELU:
                d = tl.maximum(d, 0.0)
            if HAS_MID:
                d = d * tl.load(mid_scale_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
                d = d + tl.load(mid_shift_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        if GATE == 0:
            g = tl.exp(-(d * d))
        elif GATE == 1:
            g = 1.0 / (1.0 + tl.exp(-d))
        elif GATE == 2:
            g = 2.0 / (1.0 + tl.exp(-2.0 * d)) - 1.0
        else:
            g = d
        y = x_c * g
        if HAS_OUT_SCALE:
            y = y * tl.load(out_scale_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_OUT_SHIFT:
            y = y + tl.load(out_shift_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        triton_tiles.store_tile(y_ptr, y, n, h, ws, cs, w_ok, c_ok, syn, syc, syh, syw)

    return xunit_fwd


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton imports (it ships with CUDA builds of torch; CPU builds lack it)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken install: torch ops instead
        return False
    return True


def fused_xunit_triton(x: torch.Tensor, t: FusedTerms, block_w: int = 16) -> torch.Tensor:
    """One fused xUnit forward with the Triton kernel; the caller asks :func:`xnet.kernels.dispatch.choose_impl`.
    The output has ``x``'s dtype and memory format; the arithmetic is float32."""
    n, c, height, width = x.shape
    y = torch.empty_like(x)
    block_c = channel_block(c)
    dummy = x.new_empty(1, dtype=torch.float32)

    def arg(v: torch.Tensor | None) -> torch.Tensor:
        return dummy if v is None else v.contiguous()

    wt = None
    if t.dw_weight is not None:
        k = t.kernel_size
        wt = t.dw_weight.reshape(c, k, k).permute(1, 2, 0).contiguous()  # [ky][kx][c]
    grid = (n * height, -(-width // block_w), -(-c // block_c))
    _kernel()[grid](
        x, y, arg(t.in_scale), arg(t.in_shift), arg(wt), arg(t.dw_bias), arg(t.mid_scale), arg(t.mid_shift),
        arg(t.out_scale), arg(t.out_shift),
        c, height, width, *x.stride(), *y.stride(),
        R=t.kernel_size, GATE=_GATE_CODES[t.gate], RELU=bool(t.relu), HAS_IN=t.in_scale is not None,
        HAS_DW=t.dw_weight is not None, HAS_DW_BIAS=t.dw_bias is not None, HAS_MID=t.mid_scale is not None,
        HAS_OUT_SCALE=t.out_scale is not None, HAS_OUT_SHIFT=t.out_shift is not None,
        BLOCK_W=block_w, BLOCK_C=block_c,
    )
    return y
