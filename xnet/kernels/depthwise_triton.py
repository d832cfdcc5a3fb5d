"""The depthwise r×r convolution on the GPU with Triton (zero "same" padding, stride 1; any memory
layout; fp32, fp16 or bf16 tensors with float32 arithmetic): forward, input and weight gradients.

The kernels (:mod:`xnet.kernels.triton_src.depthwise`) can also read ``u = ReLU(x·s + t)`` from
``x`` on the fly and reduce the output's per-channel statistics in the forward's epilogue; the fused
training xUnit (:mod:`xnet.kernels.xunit_train_triton`) uses both, :class:`TritonDepthwiseConv` (a
plain depthwise conv, ``DepthwiseConv2d(impl="triton")``) neither.

* forward ``y = DW(u) + b``: a program per image row and channel block walks the row in tiles; the
  ``r × r`` neighbourhood of a tile is read through L1/L2 (neighbouring tiles share it);
* input gradient: the forward with the taps flipped (the adjoint of a "same" correlation);
* weight gradient ``gW[c, ky, kx] = Σ g[n, c, h, w] · u[n, c, h + ky − p, w + kx − p]``: a program per
  tap row ``ky`` × chunk of image rows × channel block, all ``kx`` of the row at once; partial sums
  per chunk are added by torch (deterministic: no atomics). The chunks are sized so that the grid
  has about eight programs per multiprocessor.

Tile sizes: ``triton.autotune`` over :data:`xnet.kernels.triton_launch.CONFIGS`. The kernels also
run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests
check them without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from xnet.kernels.triton_launch import (
    FLOAT_DTYPES,
    MAX_KERNEL_SIZE,
    launch,
    triton_available,
    triton_interpreting,
)

__all__ = [
    "TritonDepthwiseConv",
    "combine_stats",
    "depthwise_grad_weight_triton",
    "depthwise_triton",
    "depthwise_triton_applies",
    "rows_per_chunk",
    "taps_of",
]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def taps_of(weight: torch.Tensor) -> torch.Tensor:
    """A ``C×1×r×r`` depthwise weight as the kernels take it: float32 ``[r·r, C]`` (tap-major)."""
    c, r = weight.shape[0], weight.shape[-1]
    return weight.detach().reshape(c, r * r).t().float().contiguous()


def depthwise_triton_applies(u: torch.Tensor, weight: torch.Tensor) -> bool:
    """A 4-D float tensor on CUDA (on the CPU under the interpreter), a ``C×1×r×r`` weight on the
    same device, r odd and ≤ :data:`~xnet.kernels.triton_launch.MAX_KERNEL_SIZE`; the caller checks
    stride 1, dilation 1 and zero "same" padding."""
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
        and weight.shape[2] <= MAX_KERNEL_SIZE
        and weight.device == u.device
    )


def depthwise_triton(
    u: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    coef: torch.Tensor | None = None,
    relu: bool = False,
    stats: bool = False,
    config: dict[str, int] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """``(y, parts)``: ``y = DW_r(v) + bias`` in ``u``'s dtype and memory format, with ``v = u``, or
    ``v = ReLU(u·coef[0] + coef[1])`` when ``coef`` is given (``relu``: the ReLU alone without it);
    with ``stats`` also ``parts`` = the per-row (mean, M2) of ``y``, two float32 ``[N·H, C]`` tensors
    (:func:`combine_stats` adds them up), else ``None``."""
    n, c, height, width = u.shape
    taps = taps_of(weight)
    y = torch.empty_like(u)
    parts = tuple(u.new_empty(n * height, c, dtype=torch.float32) for _ in range(2)) if stats else None
    launch(
        "dw_conv",
        lambda m: (n * height, _cdiv(c, m["BLOCK_C"])),
        u,
        taps,
        taps if bias is None else bias.detach().contiguous(),
        taps if coef is None else coef,
        y,
        *(parts or (taps, taps)),
        c,
        height,
        width,
        *u.stride(),
        *y.stride(),
        R=weight.shape[-1],
        HAS_BIAS=bias is not None,
        HAS_IN=coef is not None,
        RELU=relu,
        STATS=stats,
        config=config,
    )
    return y, parts


def combine_stats(parts: tuple[torch.Tensor, torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, biased variance) from per-row (mean, M2) partials of rows of ``width``
    pixels (Chan et al.'s parallel formula: no large sums subtracted)."""
    row_mean, row_m2 = parts
    mean = row_mean.mean(0)
    m2 = row_m2.sum(0) + width * (row_mean - mean).square().sum(0)
    return mean, m2 / (row_mean.shape[0] * width)


#: multiprocessors assumed off a GPU: an H200's (the spill audit replays its launches on meta tensors)
DEFAULT_SMS = 132


def rows_per_chunk(rows: int, r: int, device: torch.device) -> int:
    """Image rows per weight-gradient program: about eight programs (over the ``r`` tap rows) per
    multiprocessor of ``device`` (:data:`DEFAULT_SMS` off a GPU)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else DEFAULT_SMS
    return max(1, _cdiv(rows, _cdiv(8 * sms, r)))


def depthwise_grad_weight_triton(
    grad: torch.Tensor,
    u: torch.Tensor,
    r: int,
    *,
    coef: torch.Tensor | None = None,
    relu: bool = False,
    chunk_rows: int | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """``∂L/∂W`` (``C×1×r×r``, float32) of ``y = DW_r(v)`` given ``grad = ∂L/∂y``, with ``v`` as in
    :func:`depthwise_triton`; ``chunk_rows``: image rows per program (default :func:`rows_per_chunk`)."""
    n, c, height, width = u.shape
    rows = n * height
    chunk_rows = chunk_rows or rows_per_chunk(rows, r, u.device)
    chunks = _cdiv(rows, chunk_rows)
    part = u.new_empty(chunks, r * r, c, dtype=torch.float32)
    launch(
        "dw_wgrad",
        lambda m: (r, chunks, _cdiv(c, m["BLOCK_C"])),
        grad,
        u,
        part if coef is None else coef,
        part,
        c,
        height,
        width,
        rows,
        chunk_rows,
        *grad.stride(),
        *u.stride(),
        R=r,
        KX=1 << (r - 1).bit_length(),
        HAS_IN=coef is not None,
        RELU=relu,
        config=config,
    )
    return part.sum(0).t().reshape(c, 1, r, r)


class TritonDepthwiseConv(torch.autograd.Function):
    """``apply(u, weight, bias)``: the depthwise conv with the Triton forward and backward. Under
    autocast the output takes ``u``'s dtype (what the activations already are); weights stay fp32."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.has_bias = bias is not None
        ctx.save_for_backward(u, weight)
        return depthwise_triton(u, weight, bias)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, weight = ctx.saved_tensors
        need_u, need_w, need_b = ctx.needs_input_grad
        gu = depthwise_triton(grad, weight.flip(-1, -2))[0].to(u.dtype) if need_u else None
        gw = depthwise_grad_weight_triton(grad, u, weight.shape[-1]).to(weight.dtype) if need_w else None
        gb = grad.float().sum((0, 2, 3)).to(weight.dtype) if need_b and ctx.has_bias else None
        return gu, gw, gb
