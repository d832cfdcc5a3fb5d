"""Triton kernels for the xUnit's depthwise r×r convolution in training: forward, input gradient,
weight gradient (channels_last or any layout; fp32, fp16 or bf16 tensors, float32 arithmetic).

Why: cuDNN's depthwise kernels are slow at r = 9 — on an H200 an xDnCNN training step (bf16, batch
64 × 80²) spends ~76 of its ~95 ms in convolutions, against 10 ms for DnCNN-S's whole step — yet a
9×9 depthwise conv is tiny work (81 multiply-adds per output element): a direct kernel is bound by
on-chip reads, not by DRAM.

* forward ``y = DW(u) + b``: one program per image row × ``BLOCK_W`` pixels × ``BLOCK_C``
  channels; the ``r × r`` neighbourhood is read through L1/L2 (neighbouring programs share it),
  zero outside the image (the conv's "same" zero padding), float32 accumulation, ``y`` written once;
* input gradient: the same kernel on the output gradient with the taps flipped (the adjoint of a
  "same" correlation);
* weight gradient ``gW[c, ky, kx] = Σ g[n, h, w, c] · u[n, h+ky-p, w+kx-p, c]``: one program per
  tap × chunk of rows × channel block, reducing over its pixels; the taps of a chunk are adjacent
  program ids, so the chunk's tiles are re-read from L2, not DRAM. Partial sums per chunk are
  added by torch; the bias gradient is ``g.sum``.

:class:`TritonDepthwiseConv` ties them into an autograd function; :mod:`xnet.kernels.depthwise` uses
it on CUDA when ``XNET_CUDA_DEPTHWISE=triton``. The kernels also run on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``), which is how the tests check them without a GPU.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from xnet.kernels import triton_tiles
from xnet.kernels.triton_tiles import FLOAT_DTYPES, channel_block
from xnet.kernels.xunit_triton import triton_available, triton_interpreting

__all__ = ["TritonDepthwiseConv", "depthwise_triton", "depthwise_triton_applies", "depthwise_grad_weight_triton"]


@functools.lru_cache(maxsize=None)
def _kernels() -> tuple[Any, Any]:
    """The jitted kernels (built on first use, so importing xnet never imports Triton)."""
    import triton
    import triton.language as tl

    triton_tiles.load()

    @triton.jit
    def dw_fwd(
        u_ptr, w_ptr, b_ptr, y_ptr,
        C, H, W, sun, suc, suh, suw, syn, syc, syh, syw,
        R: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        n, h, ws, cs, w_ok, c_ok = triton_tiles.row_tile(C, H, W, BLOCK_W, BLOCK_C)
        u_img = u_ptr + n.to(tl.int64) * sun + cs[None, :] * suc
        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        for ky in tl.static_range(R):
            hh = h + ky - R // 2 + tl.zeros([BLOCK_W], dtype=tl.int32)  # vector: see xunit_triton
            h_ok = (hh >= 0) & (hh < H)
            for kx in tl.static_range(R):
                ww = ws + kx - R // 2
                ok = (h_ok & (ww >= 0) & (ww < W))[:, None] & c_ok[None, :]
                u = tl.load(u_img + hh[:, None].to(tl.int64) * suh + ww[:, None] * suw, mask=ok, other=0.0)
                wt = tl.load(w_ptr + (ky * R + kx) * C + cs, mask=c_ok, other=0.0)
                acc += u.to(tl.float32) * wt.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        triton_tiles.store_tile(y_ptr, acc, n, h, ws, cs, w_ok, c_ok, syn, syc, syh, syw)

    @triton.jit
    def dw_wgrad(
        g_ptr, u_ptr, out_ptr,
        C, H, W, ROWS, ROWS_PER_CHUNK, sgn, sgc, sgh, sgw, sun, suc, suh, suw,
        R: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        tap = tl.program_id(0)  # ky * R + kx: the fastest-varying id, so a chunk's taps run together
        chunk = tl.program_id(1)
        cs = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cs < C
        dy = tap // R - R // 2
        dx = tap % R - R // 2
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for i in range(0, ROWS_PER_CHUNK):
            row = chunk * ROWS_PER_CHUNK + i
            n = row // H
            h = row % H
            zero = tl.zeros([BLOCK_W], dtype=tl.int32)  # masks as vectors (see xunit_triton)
            row_in = (row + zero) < ROWS
            hh = h + dy + zero
            row_ok = row_in & (hh >= 0) & (hh < H)
            g_row = g_ptr + n.to(tl.int64) * sgn + h.to(tl.int64) * sgh + cs[None, :] * sgc
            u_row = u_ptr + n.to(tl.int64) * sun + cs[None, :] * suc
            for w0 in range(0, W, BLOCK_W):
                ws = w0 + tl.arange(0, BLOCK_W)
                ww = ws + dx
                g_ok = (row_in & (ws < W))[:, None] & c_ok[None, :]
                u_ok = (row_ok & (ww >= 0) & (ww < W))[:, None] & c_ok[None, :]
                g = tl.load(g_row + ws[:, None] * sgw, mask=g_ok, other=0.0).to(tl.float32)
                u = tl.load(u_row + hh[:, None].to(tl.int64) * suh + ww[:, None] * suw, mask=u_ok, other=0.0).to(tl.float32)
                acc += tl.sum(g * u, axis=0)
        tl.store(out_ptr + (chunk * R * R + tap) * C + cs, acc, mask=c_ok)

    return dw_fwd, dw_wgrad


def depthwise_triton_applies(u: torch.Tensor, weight: torch.Tensor) -> bool:
    """A 4-D float tensor on CUDA (on the CPU under the interpreter), a ``C×1×r×r`` weight on the
    same device, r odd; the caller checks stride 1, dilation 1 and zero "same" padding."""
    device_ok = u.is_cuda or (u.device.type == "cpu" and triton_interpreting())
    return (
        device_ok
        and triton_available()
        and u.dim() == 4
        and u.dtype in FLOAT_DTYPES
        and weight.dim() == 4
        and weight.shape[0] == u.shape[1]
        and weight.shape[1] == 1
        and weight.shape[2] == weight.shape[3]
        and weight.shape[2] % 2 == 1
        and weight.device == u.device
    )


def depthwise_triton(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, block_w: int = 32) -> torch.Tensor:
    """``y = DW_r(u) + bias`` (zero "same" padding), in ``u``'s dtype and memory format."""
    n, c, height, width = u.shape
    r = weight.shape[-1]
    y = torch.empty_like(u)
    taps = weight.reshape(c, r * r).t().contiguous()  # [ky*r + kx][c]
    bc = channel_block(c)
    grid = (n * height, -(-width // block_w), -(-c // bc))
    _kernels()[0][grid](
        u, taps, taps if bias is None else bias.contiguous(), y,
        c, height, width, *u.stride(), *y.stride(),
        R=r, HAS_BIAS=bias is not None, BLOCK_W=block_w, BLOCK_C=bc,
    )
    return y


def depthwise_grad_weight_triton(grad: torch.Tensor, u: torch.Tensor, r: int, rows_per_chunk: int = 16, block_w: int = 32) -> torch.Tensor:
    """``∂L/∂W`` (``C×1×r×r``, float32) of ``y = DW_r(u)`` given ``grad = ∂L/∂y``."""
    n, c, height, width = u.shape
    rows = n * height
    chunks = -(-rows // rows_per_chunk)
    bc = channel_block(c)
    partial = torch.empty(chunks, r * r, c, device=u.device, dtype=torch.float32)
    _kernels()[1][(r * r, chunks, -(-c // bc))](
        grad, u, partial,
        c, height, width, rows, rows_per_chunk, *grad.stride(), *u.stride(),
        R=r, BLOCK_W=block_w, BLOCK_C=bc,
    )
    return partial.sum(0).t().reshape(c, 1, r, r)


class TritonDepthwiseConv(torch.autograd.Function):
    """``apply(u, weight, bias)``: the depthwise conv with the Triton forward and backward. Under
    autocast the output takes ``u``'s dtype (what the activations already are); weights stay fp32."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.has_bias = bias is not None
        ctx.save_for_backward(u, weight)
        return depthwise_triton(u, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, weight = ctx.saved_tensors
        need_u, need_w, need_b = ctx.needs_input_grad
        gu = depthwise_triton(grad, weight.flip(-1, -2)).to(u.dtype) if need_u else None
        gw = depthwise_grad_weight_triton(grad, u, weight.shape[-1]).to(weight.dtype) if need_w else None
        gb = grad.float().sum((0, 2, 3)).to(weight.dtype) if need_b and ctx.has_bias else None
        return gu, gw, gb
